"""Pretrained weights as the wizard and the Weights page show them: every zoo model's state from
`kestrel weights list` (run in a process of its own, at most once a minute)."""

from __future__ import annotations

import streamlit as st

from ui import common as _ui

SCRATCH = "none — will train from scratch, expect much lower accuracy"
SAID = {"cached": "cached", "downloadable": "will download", "unavailable": SCRATCH}


@st.cache_data(ttl=60, show_spinner="Looking for pretrained weights…")
def zoo_weights() -> tuple[list[dict[str, str]], str]:
    """Every zoo model's weights state, and a refusal to show when the listing failed."""
    answer, refusal = _ui.kestrel("weights", "list")
    return answer or [], refusal


def sentence(model: str) -> str:
    """"pretrained: cached" / "will download" / "none — …" for a zoo model; other names are checked at submit."""
    rows, _ = zoo_weights()
    row = next((r for r in rows if r["model"] == model), None)
    return f"pretrained: {SAID.get(row['state'], row['state'])}" if row else "pretrained: checked when the job starts"
