"""The Test-score page: send images to a deployed endpoint over HTTP, or have the worker score them with a
registered model version, and look at the answers — boxes, masks, labels and scores drawn on the images,
class probabilities as bars, explanations (a classifier's 2×2 picture, a heat map per detected box).

The model runs in the endpoint's process or the worker, never in this one. The last endpoint answer is kept
in Session State and a model version's answers in its job's folder, so moving the score threshold redraws at
once without scoring again. ``?endpoint=NAME``, ``?model=NAME:VERSION`` and ``?score_job=N`` (the scoring
followed) select what is shown.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import pandas as pd
import plotly.express as px
import streamlit as st
from PIL import Image

from core.data.draw import Overlay, colour_for, draw_labels, thumbnail
from core.serving import manage, runner
from storage.db import session_scope
from storage.repos import models as repo
from storage.tables import ModelVersion
from ui import common as _ui
from ui import score_explain as _score_explain
from ui import score_job as _score_job

BY_TRAFFIC = "by the traffic split"
ENDPOINT, MODEL = "A deployed endpoint", "A registered model"
DEPLOYMENT_HEADER = "azureml-model-deployment"
RESULT = "score_result"
SHOWN_SIDE = 800
MIN_DRAWN_SIDE = 480
IMAGES_PER_REQUEST = 16  # keeps one answer's wait short and the progress bar moving
TOP_CLASSES = 10
REQUEST_TIMEOUT_S = 300.0  # an XRAI explanation takes ~10 s per image on two CPU cores
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"]
STATUS_ADVICE = {
    401: "The endpoint refused the key. If it was just regenerated, reload this page and score again.",
    400: "The endpoint could not read the request. Check that every file is an image it can open.",
    404: "The endpoint does not know the deployment asked for. Pick another, or 'by the traffic split'.",
    413: "The request is larger than the endpoint accepts. Send fewer or smaller images at a time.",
    503: "The endpoint cannot score yet: its models are loading (wait a few seconds) or failed to load "
         "(see its health on the Endpoints page), or no deployment takes traffic.",
}


@dataclass(frozen=True)
class Target:
    """A deployed endpoint as this page needs it: where, with which key, and what each deployment is."""

    name: str
    uri: str
    state: str
    key: str
    deployments: dict[str, tuple[str, tuple[str, ...]]]  # deployment -> (task, classes)
    traffic: dict[str, int]

    def tasks(self, deployment: str | None) -> set[str]:
        names = [deployment] if deployment else [d for d, share in self.traffic.items() if share > 0]
        return {self.deployments[d][0] for d in names if d in self.deployments}


@dataclass
class ScoreResult:
    """The last scoring: the images sent, the answers, and which deployment (with which classes) gave each.

    Kept in Session State as a dict: this script's classes are new objects at every run."""

    uri: str
    names: list[str]
    images: list[bytes]
    answers: list[dict[str, Any]] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)
    classes: list[list[str]] = field(default_factory=list)
    status: int | None = 200  # None: no HTTP answer at all
    error: str = ""


def _targets() -> dict[str, Target]:
    out, settings = {}, _ui.settings()
    with session_scope(_ui.engine()) as session:
        for row in repo.list_endpoints(session=session):
            deployed = {}
            for d in repo.deployments(session=session, endpoint_id=row.id):
                version = session.get(ModelVersion, d.model_version_id)
                if version is not None:
                    deployed[d.name] = (repo.model_of(session=session, version=version).task,
                                        tuple(version.settings.get("classes", ())))
            if deployed:
                info = manage.endpoint_info(session, row.name)
                # A key sealed with a lost secret is None; the endpoint then says how to replace it.
                key = next((k for k in manage.readable_keys(row, settings).values() if k), "")
                out[row.name] = Target(row.name, info["scoring_uri"], info["state"], key, deployed,
                                       dict(row.traffic))
    return out


def _entry(image: bytes, xai: dict[str, Any] | None) -> str:
    encoded = base64.b64encode(image).decode()
    if xai is None:
        return encoded
    return json.dumps({"image_base64": encoded, "model_explainability": True, "xai_parameters": xai})


def _batches(images: list[bytes], budget: int, most: int) -> list[list[int]]:
    """Image indices grouped so each JSON request stays under ``budget`` bytes (base64 adds a third) and
    holds at most ``most`` images."""
    batches: list[list[int]] = [[]]
    size = 0
    for i, image in enumerate(images):
        cost = len(image) * 4 // 3 + 64
        if batches[-1] and (size + cost > budget or len(batches[-1]) >= most):
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += cost
    return batches


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text[:500]


def score(target: Target, deployment: str | None, names: list[str], images: list[bytes],
          xai: dict[str, Any] | None) -> ScoreResult:
    """POST the images to the endpoint in the JSON form, several per request; stops at the first refusal."""
    result = ScoreResult(target.uri, names, images)
    headers = {"Authorization": f"Bearer {target.key}"} | ({DEPLOYMENT_HEADER: deployment} if deployment else {})
    # Explanations take seconds per image: one image per request lets the progress bar move.
    batches = _batches(images, int(_ui.settings().max_request_bytes * 0.9), 1 if xai else IMAGES_PER_REQUEST)
    progress = st.progress(0.0, text=f"Scoring {len(images)} image(s) at {target.name}…")
    for done, batch in enumerate(batches, start=1):
        body = {"input_data": {"columns": ["image"], "data": [_entry(images[i], xai) for i in batch]}}
        try:
            response = httpx.post(target.uri, json=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except httpx.HTTPError as exc:
            result.status, result.error = None, f"{type(exc).__name__}: {exc}"
            break
        if response.status_code != 200:
            result.status, result.error = response.status_code, _error_text(response)
            break
        result.answers += response.json()
        served_by = response.headers.get(DEPLOYMENT_HEADER, "")
        result.served_by += [served_by] * len(batch)
        result.classes += [list(target.deployments.get(served_by, ("", ()))[1])] * len(batch)
        progress.progress(done / len(batches), text=f"Scored {len(result.answers)} of {len(images)}")
    progress.empty()
    return result


@st.cache_data(max_entries=200, show_spinner=False)
def drawn_png(image: bytes, classes: tuple[str, ...], overlays: tuple[Overlay, ...]) -> bytes | None:
    """``image`` shrunk for the page with ``overlays`` drawn, as PNG; None when it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            small = thumbnail(opened, SHOWN_SIDE)
        if max(small.size) < MIN_DRAWN_SIDE:  # captions drawn on a tiny picture would be unreadable blurs
            factor = MIN_DRAWN_SIDE / max(small.size)
            small = small.resize((round(small.width * factor), round(small.height * factor)),
                                 Image.Resampling.NEAREST)
    except (OSError, ValueError):
        return None
    buffer = io.BytesIO()
    draw_labels(small, classes, overlays).save(buffer, format="PNG")
    return buffer.getvalue()


def _detections(answer: dict[str, Any], threshold: float) -> list[Overlay]:
    out = []
    for b in answer.get("boxes", []):
        if b["score"] >= threshold:
            box = b["box"]
            polygons = tuple(tuple(p) for p in b.get("polygon") or ())
            out.append(Overlay(b["label"], (box["topX"], box["topY"], box["bottomX"], box["bottomY"]), polygons,
                               b["score"]))
    return out


def _tags(answer: dict[str, Any], threshold: float) -> list[Overlay]:
    ranked = sorted(zip(answer["labels"], answer["probs"], strict=True), key=lambda lp: -lp[1])
    kept = [Overlay(label, score=p) for label, p in ranked if p >= threshold]
    return kept or [Overlay(ranked[0][0], score=ranked[0][1])]  # the top class is always named


def _probability_chart(answer: dict[str, Any], classes: tuple[str, ...], key: str) -> None:
    ranked = sorted(zip(answer["labels"], answer["probs"], strict=True), key=lambda lp: -lp[1])[:TOP_CLASSES]
    frame = pd.DataFrame({"class": [lp[0] for lp in ranked], "probability": [lp[1] for lp in ranked]})
    palette = {c: "rgb({},{},{})".format(*colour_for(c, classes or tuple(answer["labels"]))) for c in frame["class"]}
    figure = px.bar(frame, x="probability", y="class", orientation="h", color="class", range_x=[0, 1],
                    color_discrete_map=palette, title="Class probabilities")
    figure.update_layout(showlegend=False, height=140 + 40 * len(frame), margin={"t": 40, "b": 40},
                         yaxis={"categoryorder": "total ascending", "title": None})  # most probable on top
    st.plotly_chart(figure, key=key)


def _explanations(answer: dict[str, Any]) -> None:
    pictures = answer.get("visualizations")
    if not pictures:
        return
    for picture in pictures if isinstance(pictures, list) else [pictures]:
        st.image(base64.b64decode(picture), caption="Explanation: the input, the attribution map, the map over the "
                 "input, and the most important 30% of pixels", width="stretch")


def _show_one(k: int, result: ScoreResult, threshold: float) -> None:
    answer, name, classes = result.answers[k], result.names[k], tuple(result.classes[k])
    by = f" · {result.served_by[k]}" if result.served_by[k] else ""
    if "probs" in answer:
        png = drawn_png(result.images[k], classes, tuple(_tags(answer, threshold)))
        st.image(png or result.images[k], caption=f"{name}{by}", width="stretch")
        _probability_chart(answer, classes, key=f"score_probs_{k}")
        _explanations(answer)
        return
    overlays = _detections(answer, threshold)
    png = drawn_png(result.images[k], classes, tuple(overlays))
    st.image(png or result.images[k], caption=f"{name}{by} · {len(overlays)} of {len(answer.get('boxes', []))} "
             f"detections at score ≥ {threshold:.2f}", width="stretch")
    if png and any(b.get("visualizations") for b in answer.get("boxes", [])):
        _score_explain.box_maps(answer, png, key=f"score_box_maps_{k}")
    if overlays:
        st.dataframe(pd.DataFrame({"label": [o.label for o in overlays], "score": [o.score for o in overlays],
                                   "box (x0, y0, x1, y1)": [", ".join(f"{v:.3f}" for v in o.box or ())
                                                            for o in overlays]}),
                     hide_index=True, key=f"score_detections_{k}")


def show(result: ScoreResult) -> None:
    if result.error:
        if result.status is None:
            st.error(f"No answer from {result.uri} ({result.error}). The endpoint's server is not running: "
                     "restart it on the Endpoints page.")
        else:
            advice = STATUS_ADVICE.get(result.status, "The endpoint refused the request.")
            st.error(f"{advice}\n\nHTTP {result.status}: {result.error}")
    if not result.answers:
        return
    threshold = st.slider("Score threshold", 0.0, 1.0, 0.3, 0.05, key="score_threshold",
                          help="Hides labels and boxes scored below it; redraws without asking the endpoint again.")
    for start in range(0, len(result.answers), 2):
        for column, k in zip(st.columns(2), range(start, min(start + 2, len(result.answers)))):
            with column:
                _show_one(k, result, threshold)
    with st.expander("Raw JSON response"):
        st.json(result.answers)


def _endpoint_form(targets: dict[str, Target]) -> None:
    left, right = st.columns(2)
    with left:
        chosen = targets[_ui.url_selectbox("Endpoint", sorted(targets), key="score_endpoint", param="endpoint")]
    with right:
        choices = [BY_TRAFFIC, *sorted(chosen.deployments)]
        if st.session_state.get("score_deployment") not in choices:  # another endpoint was chosen
            st.session_state["score_deployment"] = BY_TRAFFIC
        picked = st.selectbox("Deployment", choices, key="score_deployment")
    deployment = None if picked == BY_TRAFFIC else picked
    if chosen.state == runner.DOWN:
        st.warning(f"Endpoint {chosen.name} is down: its server is not running. Start it on the Endpoints page.")
    elif chosen.state != "ready":
        st.warning(f"Endpoint {chosen.name} is {chosen.state}; it answers once its models are loaded "
                   "(its health is on the Endpoints page).")
    uploads = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key="score_images")
    xai = _score_explain.options(chosen.tasks(deployment))
    if st.button("Score", type="primary", key="score_run", disabled=not uploads):
        st.query_params.pop(_score_job.PARAM, None)  # a reload now comes back to this endpoint, not a model's job
        st.session_state[RESULT] = asdict(score(chosen, deployment, [u.name for u in uploads],
                                                [u.getvalue() for u in uploads], xai))
    if RESULT in st.session_state:
        show(ScoreResult(**st.session_state[RESULT]))


def _model_form(versions: dict[str, tuple[str, list[str]]]) -> None:
    """A registered version scored by the worker: its images are staged and a job queued, then followed."""
    ref = _ui.url_selectbox("Model version", list(versions), key="score_model", param="model")
    uploads = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key="score_images")
    xai = _score_explain.options({versions[ref][0]})
    if st.button("Score", type="primary", key="score_run", disabled=not uploads,
                 help="The worker loads the model and scores the images; this page follows it."):
        _score_job.queue(ref, uploads, xai)
    job = _score_job.followed()
    if job is None:
        return
    scored = _score_job.outcome(job)
    if scored is not None:
        st.caption(f"Scored by the worker with {scored.ref} (job {job.id}).")
        count = len(scored.answers)
        show(ScoreResult(scored.ref, scored.names, scored.images, scored.answers, [scored.ref] * count,
                         [scored.classes] * count))


st.title("Test-score")
targets = _targets()
versions = _score_job.model_versions()
if not targets and not versions:
    st.info("No endpoint has a deployment and no model is registered yet. Register a finished trial's model on "
            "its trial page, or deploy a registered model version on the Models page, then come back to send "
            "it images.")
    st.page_link("pages/models.py", label="Go to Models", icon=":material/deployed_code:")
    st.stop()
sources = [source for source, present in ((ENDPOINT, targets), (MODEL, versions)) if present]
if st.session_state.get("score_source") not in sources:
    asked = _score_job.PARAM in st.query_params or "model" in st.query_params
    st.session_state["score_source"] = MODEL if asked and MODEL in sources else sources[0]
source = st.radio("Score with", sources, key="score_source", horizontal=True,
                  help="An endpoint answers over HTTP; a registered model is scored by the worker, no endpoint needed.")
if source == ENDPOINT:
    _endpoint_form(targets)
else:
    _model_form(versions)
