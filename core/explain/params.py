"""The explanation parameters of SPEC §9 under the reference's names (the scoring request's
``xai_parameters``), and a detector's (D-RISE), checked at the edge; torch-free so the endpoint schema
and the UI can use them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.base.errors import config_error

P = TypeVar("P", bound=BaseModel)
XaiAlgorithm = Literal["xrai", "integrated_gradients", "guided_backprop", "guided_gradcam"]
XAI_ALGORITHMS: tuple[str, ...] = ("xrai", "integrated_gradients", "guided_backprop", "guided_gradcam")


class XaiParams(BaseModel):
    """How to explain a classification; defaults are the reference's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    xai_algorithm: XaiAlgorithm = "xrai"
    # The reference allows [2, inf) and notes attributions converge after about 50 steps.
    n_steps: int = Field(50, ge=2, le=1000)
    xrai_fast: bool = True
    approximation_method: Literal["riemann_middle", "gausslegendre"] = "riemann_middle"
    confidence_score_threshold_multilabel: float = Field(0.5, ge=0, le=1)
    visualizations: bool = True
    attributions: bool = False


def parse_xai_params(raw: Mapping[str, Any] | None, path: str = "xai_parameters") -> XaiParams:
    """``raw`` (a request's ``xai_parameters``) as XaiParams; a bad key or value is a ConfigError at ``path``."""
    return _parse(XaiParams, raw, path)


MASK_BUDGET = (8, 5000)  # D-RISE's masks: fewer gives noise, more only takes longer


class DetectionXaiParams(BaseModel):
    """How to explain a detector's boxes (beyond the reference, which explains classification only): D-RISE,
    ``number_of_masks`` predictions per image through random masks of ``mask_grid_size`` cells a side,
    each cell shown with ``mask_probability``; a map for each of the ``max_boxes`` best boxes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    xai_algorithm: Literal["d_rise"] = "d_rise"
    number_of_masks: int = Field(200, ge=MASK_BUDGET[0], le=MASK_BUDGET[1])
    mask_grid_size: int = Field(16, ge=2, le=64)
    mask_probability: float = Field(0.5, gt=0, lt=1)
    max_boxes: int = Field(10, ge=1, le=100)
    seed: int = 0  # the same masks, hence the same map, for the same image
    visualizations: bool = True
    attributions: bool = False


def parse_detection_xai_params(raw: Mapping[str, Any] | None, path: str = "xai_parameters") -> DetectionXaiParams:
    """``raw`` (a detection request's ``xai_parameters``) as DetectionXaiParams, or a ConfigError at ``path``."""
    return _parse(DetectionXaiParams, raw, path)


def _parse(model: type[P], raw: Mapping[str, Any] | None, path: str) -> P:
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise config_error(exc, path, list(model.model_fields)) from exc
