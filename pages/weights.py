"""The Weights page: for every model of the zoo, whether its pretrained weights are cached here, can be
downloaded, or are unavailable (then it trains from scratch, much less accurately); and a person's file,
uploaded, checked against its model and put where the model's library looks — for machines offline.

Both go through `kestrel weights …` in a process of its own: this process never loads a model library.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from ui import common as _ui
from ui.pretrained import zoo_weights

STATE_ICON = {"cached": "✓ cached", "downloadable": "↓ downloads when a job starts",
              "unavailable": "⚠ unavailable: trains from scratch"}
SUFFIXES = ["safetensors", "pth", "pt", "bin"]


def _table(rows: list[dict[str, str]]) -> None:
    frame = pd.DataFrame([{"model": r["model"], "task": r["task"].replace("_", " "), "library": r["family"],
                           "pretrained weights": STATE_ICON.get(r["state"], r["state"]), "where": r["where"]}
                          for r in rows])
    st.dataframe(frame, hide_index=True, width="stretch", key="weights_table")


def _import(rows: list[dict[str, str]]) -> None:
    st.subheader("Bring weights to an offline machine")
    st.caption("Download the file on a machine with internet (timm's or torchvision's ImageNet/COCO weights as "
               ".safetensors or .pth, an ultralytics release such as yolo11n.pt), then upload it here. It is "
               "checked against the model and put where the model's library looks for it.")
    models = [r["model"] for r in rows]
    with st.form("weights_import", clear_on_submit=True):
        model = st.selectbox("Model", models, key="weights_model")
        upload = st.file_uploader("Weights file", type=SUFFIXES, key="weights_file")
        trusted = st.checkbox("I trust this file", help="ultralytics' .pt files are pickles, which can run code "
                              "when loaded: import only files from ultralytics' releases or people you trust. "
                              "Other files are read without running code (safetensors, plain state dicts).")
        go = st.form_submit_button("Check and import", type="primary")
    if not go:
        return
    if upload is None:
        st.error("Choose a weights file first.")
        return
    if upload.name.endswith(".pt") and not trusted:
        st.error(f"{upload.name} is a pickle (ultralytics' format): tick “I trust this file” to import it.")
        return
    with tempfile.TemporaryDirectory() as folder, st.spinner(f"Checking {upload.name} against {model}…"):
        file = Path(folder) / Path(upload.name).name  # the browser's name, never a path of its choosing
        file.write_bytes(upload.getvalue())
        answer, refusal = _ui.kestrel("weights", "import", str(file), "--model", model)
    if answer is None:
        st.error(f"{upload.name} was not imported: {refusal}")
        return
    zoo_weights.clear()
    st.success(f"{model}: {answer['tensors']} tensors fit; weights cached at {answer['where']}. Its jobs now "
               "start from them.")


def main() -> None:
    st.title("Pretrained weights")
    st.write("Models start from weights trained on large datasets (ImageNet, COCO) and learn your images much "
             "faster and better than from scratch. With internet, a job downloads them itself; offline, bring "
             "the file below.")
    rows, refusal = zoo_weights()
    if refusal:
        st.error(f"Could not list the weights: {refusal}")
    _table(rows)
    _import(rows)


main()
