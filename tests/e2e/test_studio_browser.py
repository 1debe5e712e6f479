"""The whole studio in a real browser, by clicking and uploading only: Debian's Chromium driven by
Playwright against `kestrel studio` on an empty KESTREL_HOME. Upload a dataset zip, build a job in
the wizard, wait for it, open the leaderboard and the trial, register and deploy the model, and
test-score an image. Screenshots of each step go to test-artifacts/e2e/ (ignored by git)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core.base.tasks import Task
from core.data.samples import write_sample

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "e2e"
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
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("e2e") / "home"
    port = _free_port()
    env = {**os.environ, "KESTREL_HOME": str(home)}
    env.pop("KESTREL_DATABASE_URL", None)
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
    subprocess.run([sys.executable, "-m", "core.cli", "endpoint", "delete", "e2e-endpoint"], env=env, cwd=ROOT,
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
    folder = tmp_path_factory.mktemp("upload")
    jsonl = write_sample(Task.CLASSIFICATION, folder / "shapes", count=24, size=48, seed=7)
    archive = folder / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(jsonl.parent.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(jsonl.parent))
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


def test_upload_train_register_deploy_and_score_by_clicking(studio, page, dataset_zip):
    page.goto(f"{studio}/datasets")  # a deep link as the server's first request still goes through app.py
    expect(page.get_by_role("heading", name="Datasets")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Training: (idle|running)"))).to_be_visible()
    expect(page.get_by_text("Imports & scoring: idle")).to_be_visible()

    # 1. Upload a dataset zip on the Datasets page.
    page.get_by_text("Upload a dataset or a new version").click()
    page.locator('input[type="file"]').first.set_input_files(str(dataset_zip))
    expect(page.get_by_text(re.compile(r"1 file, .* MB uploaded"))).to_be_visible()
    page.get_by_role("textbox", name="New dataset name").fill("e2e-shapes")
    page.get_by_role("textbox", name="New dataset name").press("Enter")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("Check before importing")).to_be_visible()  # format, task, first images
    shot(page, "1-dataset-preview")
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text(re.compile(r"imported e2e-shapes:1"))).to_be_visible(timeout=SLOW)
    shot(page, "1-dataset-imported")

    # 2. The wizard: one small model, one epoch.
    go(page, "New job")
    expect(page.get_by_text("Step 1 of 5: Data")).to_be_visible()
    choose(page, "Dataset", "e2e-shapes")
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Step 2 of 5: Task & metric")).to_be_visible()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Step 3 of 5: Training mode")).to_be_visible()
    page.get_by_text("One model", exact=True).click()
    choose(page, "Model", "resnet18")
    number(page, "Epochs", 1)
    # Where the model's weights come from is said before training (it asks `kestrel weights list` first).
    expect(page.get_by_text(re.compile(r"resnet18: pretrained: "))).to_be_visible(timeout=SLOW)
    shot(page, "2-wizard-mode")
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Step 4 of 5: Limits")).to_be_visible()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Step 5 of 5: Review")).to_be_visible()
    expect(page.locator("code").first).to_contain_text("azureml:e2e-shapes:1")
    shot(page, "3-wizard-review")
    page.get_by_role("button", name="Submit job").click()

    # 3. The job runs in the worker; the Jobs page follows it live.
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.get_by_text(re.compile(r"completed — done: 1 trials; best trial"))).to_be_visible(timeout=SLOW)
    shot(page, "4-leaderboard")

    # 4. The trial page: a click on a cell of the confusion matrix shows that cell's images; register.
    page.get_by_role("link", name=re.compile(r"Open trial \d+")).first.click()
    click_another_confusion_cell(page, ["circle", "square", "triangle"])
    page.get_by_role("textbox", name="Model name").fill("e2e-model")
    page.get_by_role("button", name="Register model").click()
    expect(page.get_by_text("Registered as e2e-model:1.")).to_be_visible()
    shot(page, "5-trial-registered")

    # 5. The Models page: deploy it behind a new endpoint, then open that endpoint.
    go(page, "Models")
    expect(page.get_by_text("e2e-model version 1")).to_be_visible()
    page.get_by_role("textbox", name="New endpoint name").fill("e2e-endpoint")
    page.get_by_role("textbox", name="New endpoint name").press("Enter")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_text(re.compile(r"Deploying e2e-model:1 as .* on e2e-endpoint"))).to_be_visible()
    page.get_by_role("link", name="Open endpoint e2e-endpoint").click()
    expect(page.get_by_text("Endpoint e2e-endpoint")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Scoring URL http://127\.0\.0\.1:\d+/score"))).to_be_visible()
    shot(page, "6-deployed")

    # 6. Test-score: upload an image and see the scored overlay (retrying while the model loads).
    go(page, "Test-score")
    image = next((dataset_zip.parent / "shapes" / "images").iterdir())
    page.locator('input[type="file"]').first.set_input_files(str(image))
    raw = page.get_by_text("Raw JSON response")
    deadline = time.monotonic() + SLOW / 1000
    while time.monotonic() < deadline:
        page.get_by_role("button", name="Score", exact=True).click()
        try:
            expect(raw).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            continue
    expect(raw).to_be_visible()
    expect(page.locator('[data-testid="stImage"]').first).to_be_visible()
    shot(page, "7-scored")

    # 7. The Datasets page by its own address, now that it puts the dataset in the URL: no "Page not found".
    page.goto(f"{studio}/datasets")
    expect(page.get_by_text("All 24 images imported; no items were skipped.")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert page.url.startswith(f"{studio}/datasets?dataset=e2e-shapes")
