"""The active-learning loop through a real endpoint process: an endpoint keeps the images it scored with low
confidence (opt-in, with a quota), they are labelled from the model's pre-labels into a new dataset version,
the deployed model trains on from its checkpoint on that version, the new model deploys as a canary with a
traffic split, and the endpoint compares the two deployments' confidence on new requests."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from core.base.errors import ConfigError, KestrelError, NotFound
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.reviewed import add_reviewed
from core.data.samples import write_sample
from core.runs.trial import run_trial
from core.serving.manage import canary_split
from core.serving.review import confidence, prelabels, summary
from storage.db import make_engine, session_scope
from storage.repos import datasets, jobs, reviews, trials
from storage.repos.datasets import NewAnnotation
from storage.settings import Settings

CLASSIFIER = {"model_name": "test_resnet", "number_of_epochs": 1, "training_batch_size": 8,
              "training_crop_size": 32, "validation_crop_size": 32, "validation_resize_size": 32}


# --- confidence, pre-labels, traffic: hand-made cases --------------------------------------------------------

def test_confidence_is_the_top_probability_the_least_certain_label_or_the_best_box():
    assert confidence({"probs": [0.2, 0.7, 0.1], "labels": ["a", "b", "c"]}, Task.CLASSIFICATION) == 0.7
    assert confidence({"probs": [0.9, 0.45, 0.02], "labels": ["a", "b", "c"]}, Task.MULTILABEL) == 0.55
    boxes = {"boxes": [{"box": {}, "label": "a", "score": 0.3}, {"box": {}, "label": "b", "score": 0.6}]}
    assert confidence(boxes, Task.DETECTION) == 0.6
    assert confidence({"boxes": []}, Task.DETECTION) == 0.0  # found nothing: worth a look


def test_the_answer_becomes_the_labels_a_person_edits():
    assert prelabels({"probs": [0.2, 0.7, 0.1], "labels": ["a", "b", "c"]}, Task.CLASSIFICATION) == [
        {"label": "b", "box": None, "polygons": []}]
    assert [p["label"] for p in prelabels({"probs": [0.9, 0.45, 0.6], "labels": ["a", "b", "c"]},
                                          Task.MULTILABEL)] == ["a", "c"]
    box = {"topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6}
    found = {"boxes": [{"box": box, "label": "a", "score": 0.8}, {"box": box, "label": "b", "score": 0.1}]}
    assert prelabels(found, Task.DETECTION) == [{"label": "a", "box": [0.1, 0.2, 0.5, 0.6], "polygons": []}]
    unsure = {"boxes": [{"box": box, "label": "a", "score": 0.04}, {"box": box, "label": "b", "score": 0.1},
                        {"box": box, "label": "c", "score": 0.06}]}  # all below 0.25: half the best is the cut
    assert [p["label"] for p in prelabels(unsure, Task.DETECTION)] == ["b", "c"]
    shaped = {"boxes": [{"box": box, "label": "a", "score": 0.8, "polygon": [[0.1, 0.2, 0.5, 0.2, 0.3, 0.6]]}]}
    assert prelabels(shaped, Task.SEGMENTATION) == [
        {"label": "a", "box": [0.1, 0.2, 0.5, 0.6], "polygons": [[0.1, 0.2, 0.5, 0.2, 0.3, 0.6]]}]


def test_a_canary_takes_its_share_and_the_others_keep_theirs_in_proportion():
    assert canary_split({"blue": 100}, "green", 10) == {"blue": 90, "green": 10}
    assert canary_split({"blue": 70, "red": 30}, "green", 25) == {"blue": 53, "red": 22, "green": 25}
    assert canary_split({}, "green", 40) == {"green": 40}
    with pytest.raises(ConfigError, match="not a percentage"):
        canary_split({"blue": 100}, "green", 101)
    assert summary([0.2, 0.9, 0.6]) == {"images": 3, "mean": 0.5667, "median": 0.6, "low": 0.3333}


# --- the loop through a real endpoint -----------------------------------------------------------------------

class Kestrel:
    def __init__(self, home: Path) -> None:
        from core.cli import app

        self.app, self.env = app, {"KESTREL_HOME": str(home)}

    def __call__(self, *args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(self.app, [*args, "--json"], env=self.env)
        if not ok:
            assert result.exit_code == 2, result.stdout
            return result.stderr
        assert result.exit_code == 0, f"{args}: {result.stdout}{result.stderr}{result.exception!r}"
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, template_db: Path):  # type: ignore[no-untyped-def]
    """A tiny classifier registered as m:1 and deployed as ``blue`` behind endpoint ``al``."""
    root = tmp_path_factory.mktemp("active")
    home = root / "home"
    home.mkdir()
    shutil.copyfile(template_db, home / "kestrel.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KESTREL_HOME", str(home))
        settings = Settings()
        engine = make_engine(settings.db_url)
        kestrel = Kestrel(home)
        jsonl = write_sample(Task.CLASSIFICATION, root / "shapes", count=16, size=48, seed=3)
        import_dataset(jsonl, ImportOptions("shapes", Task.CLASSIFICATION), settings=settings, engine=engine)
        first = run_trial(settings=settings, engine=engine, dataset="shapes", version=None, overrides=CLASSIFIER)
        kestrel("model", "register", "--trial", str(first.trial_id), "--name", "m")
        kestrel("endpoint", "create", "al")
        info = kestrel("deployment", "create", "--endpoint", "al", "--name", "blue", "--model", "m:1")
        keys = kestrel("endpoint", "keys", "al")
        images = sorted((root / "shapes" / "images").iterdir())
        yield {"kestrel": kestrel, "uri": info["scoring_uri"], "key": keys["primary_key"], "images": images,
               "engine": engine, "first_trial": first.trial_id, "settings": settings}
        kestrel("endpoint", "delete", "al")
        engine.dispose()


def _score(loop: dict, image: Path) -> httpx.Response:
    answer = httpx.post(loop["uri"], content=image.read_bytes(), timeout=60,
                        headers={"Content-Type": "application/octet-stream", "Authorization": f"Bearer {loop['key']}"})
    assert answer.status_code == 200, answer.text
    return answer


def _until(check: Any, what: str, seconds: float = 30) -> Any:
    """The recorder writes after the answer is sent: wait for it."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def test_without_opting_in_nothing_is_kept_but_every_confidence_is_recorded(loop):
    kestrel = loop["kestrel"]
    for image in loop["images"][:2]:
        _score(loop, image)
    shown = _until(lambda: (s := kestrel("endpoint", "show", "al"))["confidence"].get("blue", {}).get("images") == 2
                   and s, "two confidences recorded")
    assert shown["review"] is None and shown["review_pending"] == 0
    assert kestrel("review", "list", "al")["items"] == []


def test_the_loop_from_low_confidence_images_to_a_canary_compared_with_the_old_model(loop):
    kestrel, engine = loop["kestrel"], loop["engine"]
    # Every answer of a one-epoch model is below 1.0: with that threshold each image is kept, up to the quota.
    kestrel("review", "on", "al", "--threshold", "1.0", "--quota", "3")
    for image in loop["images"][2:7]:
        _score(loop, image)
    items = _until(lambda: len(r := kestrel("review", "list", "al")["items"]) == 3 and r, "three images queued")
    assert [i["confidence"] for i in items] == sorted(i["confidence"] for i in items)  # least confident first
    assert all(i["deployment"] == "blue" and i["size"] == [48, 48] for i in items)
    assert all(len(i["prelabels"]) == 1 and i["prelabels"][0]["label"] in {"circle", "square", "triangle"}
               for i in items)
    time.sleep(1)  # two more low-confidence answers came in: the quota keeps them out
    assert len(kestrel("review", "list", "al")["items"]) == 3

    # A person corrects one image's class and keeps the model's answer for another; the third is dismissed.
    first, second, third = (i["id"] for i in items)
    corrected = loop["images"][0].parent.parent / "corrected.json"
    corrected.write_text(json.dumps({str(first): [{"label": "triangle", "box": None, "polygons": []}]}))
    added = kestrel("review", "add", "al", "--ids", f"{first},{second}", "--labels", str(corrected))
    assert (added["dataset"], added["version"], added["added"]) == ("shapes", 2, [first, second])
    kestrel("review", "dismiss", "al", "--ids", str(third))
    assert kestrel("review", "list", "al")["items"] == []
    with session_scope(engine) as session:
        old, new = (datasets.get_version(session=session, name="shapes", version=v) for v in (1, 2))
        assert new.image_count == old.image_count + 2 and "review queue" in new.source
        added_rows = datasets.images(session=session, version_id=new.id)[-2:]
        assert [r.split for r in added_rows] == ["train", "train"]
        labels = datasets.annotations(session=session, image_ids=[r.id for r in added_rows])
        given = {first: "triangle", second: items[1]["prelabels"][0]["label"]}  # added in the order of their ids
        assert [labels[r.id][0].label for r in added_rows] == [given[k] for k in sorted(given)]
        assert reviews.blobs(session=session) == set()  # nothing pending: dismissed blobs may be swept

    # Retrain: the deployed model's trial trained on from its checkpoint, on version 2.
    retrained = kestrel("review", "retrain", "al", "--epochs", "1", "--wait")
    assert retrained["status"] == "completed"
    with session_scope(engine) as session:
        job = jobs.get(session=session, job_id=retrained["job_id"])
        trial = trials.get(session=session, trial_id=retrained["trial"])
        assert (job.spec["dataset"], job.spec["version"]) == ("shapes", 2)
        assert str(trial.metrics["manifest"]["params"]["checkpoint_run_id"]) == str(loop["first_trial"])
        assert (job.spec["retrain_of"], job.spec["endpoint"], job.spec["deployment"]) == (
            loop["first_trial"], "al", "blue")

    # The new model as a canary taking 30% of the traffic; both deployments' confidence is compared.
    kestrel("model", "register", "--trial", str(retrained["trial"]), "--name", "m")
    shown = kestrel("deployment", "create", "--endpoint", "al", "--name", "green", "--model", "m:2", "--traffic", "30")
    assert shown["traffic"] == {"blue": 70, "green": 30}
    kestrel("review", "off", "al")
    picked = [_score(loop, image).headers["azureml-model-deployment"] for image in loop["images"] * 3]
    assert {"blue", "green"} == set(picked)
    seen = _until(lambda: (c := kestrel("endpoint", "show", "al")["confidence"]).get("green", {}).get("images")
                  == picked.count("green") and c, "the canary's confidences recorded")
    assert seen["blue"]["images"] >= picked.count("blue")
    assert all(0 < seen[d]["mean"] <= 1 for d in ("blue", "green"))
    assert kestrel("review", "list", "al")["items"] == []  # off: nothing more kept


def test_queue_mistakes_are_refused_by_name(loop):
    kestrel, engine = loop["kestrel"], loop["engine"]
    assert "not waiting in endpoint al's queue" in kestrel("review", "add", "al", "--ids", "999", ok=False)
    assert "is not a confidence between 0 and 1" in kestrel("review", "on", "al", "--threshold", "2", ok=False)
    assert "endpoint nope does not exist" in kestrel("review", "list", "nope", ok=False)
    assert "has no deployment 'red'" in kestrel("review", "retrain", "al", "--deployment", "red", ok=False)
    with session_scope(engine) as session, pytest.raises(NotFound):
        add_reviewed(session=session, endpoint="al", labels={12345: [NewAnnotation("circle")]})
    assert issubclass(NotFound, KestrelError)
