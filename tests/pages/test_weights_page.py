"""The Weights page, headless with AppTest: every zoo model's pretrained weights state, and a file
uploaded, checked against its model and cached where the library looks (in a private cache here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def private_caches(settings, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The `kestrel weights` processes the page starts look in caches of the test's own."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ui.pretrained import zoo_weights

    zoo_weights.clear()
    yield tmp_path
    zoo_weights.clear()


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page("pages/weights.py")
    return at.run()


def _state(at: AppTest, model: str) -> str:
    table = at.dataframe[0].value
    return str(table.loc[table["model"] == model, "pretrained weights"].iloc[0])


def test_every_model_is_listed_and_an_uploaded_file_is_checked_and_cached(private_caches):
    at = _page()
    assert not at.exception
    assert "unavailable" in _state(at, "mobilenetv2") and "unavailable" in _state(at, "yolo11n")
    weights = save({k: v.contiguous() for k, v in timm.create_model("mobilenetv2_100").state_dict().items()})
    at.selectbox(key="weights_model").set_value("mobilenetv2")
    at.file_uploader(key="weights_file").set_value([("mobilenetv2.safetensors", weights, "application/octet-stream")])
    at = at.button[0].click().run()
    assert not at.error and "mobilenetv2" in at.success[0].value and "tensors fit" in at.success[0].value
    assert "cached" in _state(at.run(), "mobilenetv2")
    assert any((private_caches / "hf").rglob("model.safetensors"))


def test_a_file_for_another_model_or_an_untrusted_pickle_is_refused_where_it_was_uploaded(private_caches):
    at = _page()
    weights = save({k: v.contiguous() for k, v in timm.create_model("mobilenetv2_100").state_dict().items()})
    at.selectbox(key="weights_model").set_value("resnet18")
    at.file_uploader(key="weights_file").set_value([("mine.safetensors", weights, "application/octet-stream")])
    at = at.button[0].click().run()
    assert "does not hold weights for resnet18" in at.error[0].value
    at.selectbox(key="weights_model").set_value("yolo11n")
    at.file_uploader(key="weights_file").set_value([("yolo11n.pt", b"not really", "application/octet-stream")])
    at = at.button[0].click().run()
    assert "is a pickle" in at.error[0].value and "I trust this file" in at.error[0].value
