"""The whole studio in a real browser, by clicking and uploading only: Debian's Chromium driven by
Playwright against `kestrel studio` on an empty KESTREL_HOME. Upload a dataset zip, build a job in
the wizard, wait for it, open the leaderboard and the trial, register and deploy the model, and
test-score and explain an image, on the shared fridge photos (and, for a YOLO model deployed with the CLI, a
box's heat map by clicking it); at each page what a person would check
(texts, links that open what they name, pictures drawn). Screenshots of each page and the time from
Submit to the job's page go to tests/e2e/output/ (ignored by git, kept by CI)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "tests" / "e2e" / "output"  # a screenshot per page and the timings: CI's artifacts (ignored by git)
SHARED = ROOT.parent / "shared" / "datasets"
FRIDGE = (SHARED if SHARED.is_dir() else Path("/work/shared/datasets")) / "fridgeObjects_small150"
FRIDGE_BOXES = FRIDGE.parent / "odFridgeObjects_FairMOTformat"
CLASSES = ["can", "carton", "milk_bottle", "water_bottle"]
MENU = ["Datasets", "Labelling", "Weights", "New job", "Jobs", "Models", "Endpoints", "Test-score"]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SLOW = 240_000  # ms: a trial on a CPU shared with the rest of the suite
expect.set_options(timeout=60_000)  # a step may wait for a subprocess (a job's checks, a model's start)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e") / "home"


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "KESTREL_HOME": str(home), "KESTREL_MEASURE_LATENCY": "1"}
    env.pop("KESTREL_DATABASE_URL", None)
    return env


def kestrel(home: Path, *args: str) -> dict[str, object]:
    """A CLI command against the studio's home, its --json answer."""
    done = subprocess.run([sys.executable, "-m", "core.cli", *args, "--json"], env=_env(home), cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def studio(home: Path) -> Iterator[str]:
    port = _free_port()
    env = _env(home)
    log = open(home.parent / "studio.log", "wb")  # noqa: SIM115 - open for the fixture's lifetime
    process = subprocess.Popen([sys.executable, "-m", "core.cli", "studio", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield url
    for endpoint in ("e2e-endpoint", "e2e-yolo"):
        subprocess.run([sys.executable, "-m", "core.cli", "endpoint", "delete", endpoint], env=env, cwd=ROOT,
                       capture_output=True, check=False)
    os.killpg(process.pid, 15)
    process.wait(timeout=60)
    log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared fridge objects (134 photos of 4 classes, MLTable + JSONL) zipped as a person would."""
    archive = tmp_path_factory.mktemp("upload") / "fridgeObjects.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(FRIDGE.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(FRIDGE))
    return archive


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def choose(page: Page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text(label, exact=True)).first
    box.locator('[role="combobox"], input').first.click()
    page.get_by_role("option", name=option, exact=True).first.click()


def number(page: Page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True).first
    field.fill(str(value))
    field.press("Enter")


def click_another_confusion_cell(page: Page, classes: list[str]) -> None:
    """Click each cell of the confusion matrix but the one shown until one with images is taken."""
    shown = page.get_by_text(re.compile(r"^True \w+, predicted \w+:"))
    expect(shown).to_be_visible()
    before = shown.inner_text()
    area = page.locator(".js-plotly-plot", has_text="Confusion matrix").first.locator(".nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    assert box is not None
    n = len(classes)
    for row, true in enumerate(classes):  # the first class is the top row
        for column, predicted in enumerate(classes):
            cell = f"True {true}, predicted {predicted}:"
            if before.startswith(cell):
                continue
            page.mouse.click(box["x"] + box["width"] * (column + 0.5) / n, box["y"] + box["height"] * (row + 0.5) / n)
            try:
                expect(shown).to_contain_text(cell, timeout=5_000)
            except AssertionError:  # an empty cell: nothing to show
                continue
            shot(page, "5-trial-confusion-cell")
            return
    raise AssertionError(f"no click on the confusion matrix changed the cell shown ({before!r})")


def settle(page: Page) -> None:
    """Wait until the script's run is over (Streamlit shows its status widget while it runs), so that no
    element of the last run is still on the page beside the new one."""
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=SLOW)


def next_step(page: Page) -> None:
    """The wizard's Next, once the run that drew this step is over: until then the last step's button
    may still stand beside this one's."""
    settle(page)
    page.get_by_role("button", name="Next").click()


def go(page: Page, title: str) -> None:
    page.get_by_role("link", name=title).first.click()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot(page, "failure")
    page.close()


def test_upload_train_register_deploy_score_and_explain_by_clicking(studio, page, dataset_zip):
    page.goto(f"{studio}/datasets")  # a deep link as the server's first request still goes through app.py
    expect(page.get_by_role("heading", name="Datasets")).to_be_visible()
    menu = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
    expect(menu).to_have_count(len(MENU))  # the pages only, in workflow order: no helper module, no file name
    assert [m.split("\n")[-1].strip() for m in menu.all_inner_texts()] == MENU  # after the icon's name
    expect(page.get_by_text(re.compile(r"Training: (idle|running)"))).to_be_visible()
    expect(page.get_by_text("Imports & scoring: idle")).to_be_visible()
    shot(page, "0-datasets")

    # 1. Upload the fridge photos as a zip; the preview names format, task and classes before anything is stored.
    page.get_by_text("Upload a dataset or a new version").click()
    page.locator('input[type="file"]').first.set_input_files(str(dataset_zip))
    expect(page.get_by_text(re.compile(r"1 file, .* MB uploaded"))).to_be_visible()
    page.get_by_role("textbox", name="New dataset name").fill("fridge")
    page.get_by_role("textbox", name="New dataset name").press("Enter")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("Check before importing")).to_be_visible()
    for name in CLASSES:
        expect(page.get_by_text(name).first).to_be_visible()
    expect(page.locator('[data-testid="stImage"]').first).to_be_visible()  # first images with labels drawn
    shot(page, "1-dataset-preview")
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text(re.compile(r"imported fridge:1 \(134 images"))).to_be_visible(timeout=SLOW)
    expect(page.get_by_text("Check before importing")).to_have_count(0)  # the preview is gone with the upload
    page.get_by_role("link", name="Open fridge version 1").click()
    expect(page.get_by_text("All 134 images imported; no items were skipped.")).to_be_visible()
    expect(page.get_by_text(re.compile(r"from an upload")).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"staging"))).to_have_count(0)
    shot(page, "1-dataset-imported")

    # 2. The wizard: the estimate from the first step; one model, one epoch, a small crop, a name.
    go(page, "New job")
    expect(page.get_by_text("Step 1 of 5: Data")).to_be_visible()
    choose(page, "Dataset", "fridge")
    expect(page.get_by_text("134 images, 4 classes", exact=False)).to_be_visible()
    expect(page.get_by_text(re.compile(r"Estimated on this machine"))).to_be_visible()
    next_step(page)
    expect(page.get_by_text("Step 2 of 5: Task & metric")).to_be_visible()
    next_step(page)
    expect(page.get_by_text("Step 3 of 5: Training mode")).to_be_visible()
    page.get_by_text("One model", exact=True).click()
    choose(page, "Model", "resnet18")
    number(page, "Epochs", 1)
    number(page, "Training crop (px)", 64)
    number(page, "Validation crop (px)", 64)
    # Where the model's weights come from is said before training (it asks `kestrel weights list` first).
    expect(page.get_by_text(re.compile(r"resnet18: pretrained: "))).to_be_visible(timeout=SLOW)
    shot(page, "2-wizard-mode")
    next_step(page)
    expect(page.get_by_text("Step 4 of 5: Limits")).to_be_visible()
    next_step(page)
    expect(page.get_by_text("Step 5 of 5: Review")).to_be_visible()
    page.get_by_role("textbox", name="Job name").fill("fridge-e2e")
    page.get_by_role("textbox", name="Job name").press("Enter")
    code = page.locator("code").first
    for text in ("azureml:fridge:1", "display_name: fridge-e2e", "training_crop_size: 64"):
        expect(code).to_contain_text(text)
    shot(page, "3-wizard-review")
    clicked = time.monotonic()
    page.get_by_role("button", name="Submit job").click()

    # 3. Submit lands on the job's page at once; the worker runs it; the page follows it live.
    expect(page.get_by_role("heading", name=re.compile(r"Job \d+: fridge-e2e"))).to_be_visible()
    submitted_s = time.monotonic() - clicked
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "timings.json").write_text(json.dumps({"submit_to_job_page_s": round(submitted_s, 2)}))
    done = page.get_by_text(re.compile(r"completed — done: 1 trial; best trial \d+ \(resnet18\) accuracy"))
    expect(done).to_be_visible(timeout=SLOW)
    expect(page.get_by_text("waiting for a worker")).to_have_count(0)
    expect(page.get_by_role("heading", name="Accuracy against latency")).to_be_visible()  # the model was timed
    expect(page.get_by_role("combobox", name="A trial on the frontier")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"Register trial \d+ as fridge-e2e-trial-\d+"))).to_be_visible()
    shot(page, "4-job")
    page.get_by_role("heading", name="Accuracy against latency").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "4-job-pareto.png"))  # the page scrolls inside: the viewport shows the chart

    # 4. The trial page by its link: curves, the confusion matrix whose cells open their images; register.
    page.get_by_role("link", name=re.compile(r"Open trial \d+")).first.click()
    expect(page.get_by_role("heading", name=re.compile(r"Trial \d+ · job \d+"))).to_be_visible()
    click_another_confusion_cell(page, CLASSES)
    page.get_by_role("textbox", name="Model name").fill("fridge-model")
    page.get_by_role("button", name="Register model").click()
    expect(page.get_by_text("Registered as fridge-model:1.")).to_be_visible()
    shot(page, "5-trial-registered")

    # 5. The link after Register opens that model; deploy it behind a new endpoint, then open that endpoint.
    page.get_by_role("link", name="Open model fridge-model:1").click()
    expect(page.get_by_role("heading", name="fridge-model version 1")).to_be_visible()
    page.get_by_role("textbox", name="New endpoint name").fill("e2e-endpoint")
    page.get_by_role("textbox", name="New endpoint name").press("Enter")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_text(re.compile(r"Deploying fridge-model:1 as .* on e2e-endpoint"))).to_be_visible()
    shot(page, "6-model")
    page.get_by_role("link", name="Open endpoint e2e-endpoint").click()
    expect(page.get_by_text("Endpoint e2e-endpoint")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Scoring URL http://127\.0\.0\.1:\d+/score"))).to_be_visible()
    shot(page, "7-endpoint")

    # 6. Test-score a photo (retrying while the model loads): probabilities; then explain it.
    go(page, "Test-score")
    image = next(iter(sorted((FRIDGE / "small-150").iterdir())))
    page.locator('input[type="file"]').first.set_input_files(str(image))
    score_until_answered(page)
    expect(page.locator('[data-testid="stImage"]').first).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()  # the probabilities as bars
    shot(page, "8-scored")
    page.get_by_text("Explain", exact=True).click()
    choose(page, "Algorithm", "guided gradcam")
    page.get_by_role("button", name="Score", exact=True).click()
    expect(page.get_by_text(re.compile(r"Explanation: the input, the attribution map"))).to_be_visible(timeout=SLOW)
    shot(page, "9-explained")

    # 7. The Datasets page by its own address, now that it puts the dataset in the URL: no "Page not found".
    page.goto(f"{studio}/datasets")
    expect(page.get_by_text("All 134 images imported; no items were skipped.")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert page.url.startswith(f"{studio}/datasets?dataset=fridge")


def score_until_answered(page: Page) -> None:
    """Click Score until the endpoint answers (its model may still be loading)."""
    raw = page.get_by_text("Raw JSON response")
    deadline = time.monotonic() + SLOW / 1000
    while time.monotonic() < deadline:
        page.get_by_role("button", name="Score", exact=True).click()
        try:
            expect(raw).to_be_visible(timeout=10_000)
            return
        except AssertionError:
            continue
    expect(raw).to_be_visible()


def test_a_yolo_detection_is_explained_box_by_box_by_clicking(home, studio, page):
    """A YOLO model trained, registered and deployed with the CLI; in the browser, its answer on a fridge photo
    is explained (D-RISE, 16 masks) and clicking a box's marker shows that box's heat map."""
    kestrel(home, "data", "import", str(FRIDGE_BOXES / "od_mltable"), "--name", "fridge-boxes")
    # One epoch from scratch finds little: a low score threshold still gives boxes to explain.
    trial = kestrel(home, "train", "--data", "fridge-boxes", "--model", "yolov8n", "--set", "img_size=128",
                    "--set", "number_of_epochs=1", "--set", "training_batch_size=16",
                    "--set", "box_score_threshold=0.001")
    kestrel(home, "model", "register", "--name", "fridge-yolo", "--trial", str(trial["trial_id"]))
    kestrel(home, "endpoint", "create", "e2e-yolo")
    kestrel(home, "deployment", "create", "--endpoint", "e2e-yolo", "--name", "blue", "--model", "fridge-yolo:1")

    page.goto(f"{studio}/score?endpoint=e2e-yolo")
    expect(page.get_by_role("heading", name="Test-score")).to_be_visible()
    image = sorted((FRIDGE_BOXES / "images").iterdir())[0]
    page.locator('input[type="file"]').first.set_input_files(str(image))
    page.get_by_text("Explain", exact=True).click()
    number(page, "Masks (the budget)", 16)
    expect(page.get_by_text("About 16 predictions per image")).to_be_visible()
    score_until_answered(page)
    chart = page.locator(".js-plotly-plot", has_text="Click a box's marker to explain it").first
    expect(chart).to_be_visible(timeout=SLOW)
    expect(page.get_by_text(re.compile(r"What made the model find \w+"))).to_be_visible()
    chosen = page.get_by_role("combobox", name="Box")
    settle(page)
    expect(chosen).to_have_value(re.compile(r"^1\. "))
    for _ in range(3):  # a click while the page redraws can miss: click the second box's marker until it takes
        chart.scroll_into_view_if_needed()
        where = chart.locator(".scatterlayer .point").nth(1).bounding_box()
        assert where is not None
        page.mouse.click(where["x"] + where["width"] / 2, where["y"] + where["height"] / 2)
        settle(page)
        try:
            expect(chosen).to_have_value(re.compile(r"^2\. "), timeout=10_000)  # that box chosen, its map below
            break
        except AssertionError:
            continue
    expect(chosen).to_have_value(re.compile(r"^2\. "))
    expect(page.get_by_text(re.compile(r"What made the model find \w+"))).to_be_visible()
    shot(page, "10-yolo-box-explained")

    # The active-learning loop's first half by clicking: the endpoint keeps what it was unsure of, the review
    # queue shows it with the model's boxes as pre-labels, and accepting adds it to the dataset as version 2.
    kestrel(home, "review", "on", "e2e-yolo", "--threshold", "1.0", "--quota", "5")
    key = kestrel(home, "endpoint", "keys", "e2e-yolo")["primary_key"]
    uri = kestrel(home, "endpoint", "show", "e2e-yolo")["scoring_uri"]
    for photo in sorted((FRIDGE_BOXES / "images").iterdir())[1:3]:
        answer = httpx.post(str(uri), content=photo.read_bytes(), timeout=120,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"})
        assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 60
    while len(kestrel(home, "review", "list", "e2e-yolo")["items"]) < 2:  # recorded after the answers
        assert time.monotonic() < deadline, "the endpoint kept no image for review"
        time.sleep(1)
    page.goto(f"{studio}/labelling?mode=review&endpoint=e2e-yolo")
    expect(page.get_by_text("Review queue (2)")).to_be_visible()
    expect(page.get_by_text(re.compile(r"confidence 0\.\d+ · deployment blue"))).to_be_visible()
    # The canvas with the model's boxes to correct, and their table beside it.
    expect(page.get_by_role("button", name="Reset canvas & history")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    settle(page)
    shot(page, "11-review-queue")
    page.get_by_role("button", name="Accept labels").click()
    settle(page)
    page.get_by_role("button", name="Add to fridge-boxes").click()
    expect(page.get_by_text(re.compile(r"Added 1 reviewed image as fridge-boxes version 2"))).to_be_visible()
    assert len(kestrel(home, "review", "list", "e2e-yolo")["items"]) == 1

    page.goto(f"{studio}/endpoints?endpoint=e2e-yolo")
    expect(page.get_by_text("Learning from requests")).to_be_visible()
    chart = page.locator(".js-plotly-plot", has_text="Confidence on the latest").first
    expect(chart).to_be_visible()
    chart.scroll_into_view_if_needed()
    shot(page, "12-endpoint-confidence")
