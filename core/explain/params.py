"""The explanation parameters of SPEC §9 under the reference's names (the scoring request's
``xai_parameters``), checked at the edge; torch-free so the endpoint schema and the UI can use them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.base.errors import config_error

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
    try:
        return XaiParams.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise config_error(exc, path, list(XaiParams.model_fields)) from exc
