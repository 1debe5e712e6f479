"""Pictures of attributions (SPEC §9): the 2×2 explanation grid, heat maps in the reference's
blue-green-yellow-white colours, and heat maps blended over an image. numpy and PIL only."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image, ImageDraw

# Colour stops of a blue-green-yellow-white scale, after colorcet's ``bgyw`` that the reference uses:
# blue is the least important, white the most.
BGYW_STOPS = (0.0, 0.35, 0.7, 1.0)
BGYW_COLOURS = ((12, 20, 140), (20, 150, 90), (240, 225, 40), (255, 255, 255))
TOP_FRACTION = 0.3  # the fourth panel keeps the input's top 30% pixels (SPEC §9)
BLEND_ALPHA = 0.5  # heat map over the input: both stay readable
# Gradient attributions have a few extreme pixels; scaling to the 99th percentile keeps the rest visible,
# as captum's and saliency's own visualisations do.
CLIP_PERCENTILE = 99.0


def importance(attribution: np.ndarray, *, signed_regions: bool = False) -> np.ndarray:
    """A [H, W] map in [0, 1] from attributions [3, H, W], 1 the most important pixel.

    Gradient attributions count by magnitude, summed over the colour channels. ``signed_regions`` is for
    XRAI, whose values are region scores (the same in each channel) where higher means more important.
    """
    values = attribution[0].astype(np.float64) if signed_regions else np.abs(attribution).sum(axis=0)
    low = float(values.min()) if signed_regions else 0.0
    high = float(values.max() if signed_regions else np.percentile(values, CLIP_PERCENTILE))
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def heat_colours(weights: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a [H, W] map in [0, 1] on the blue-green-yellow-white scale."""
    channels = [np.interp(weights, BGYW_STOPS, [c[k] for c in BGYW_COLOURS]) for k in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def blend(image: Image.Image, weights: np.ndarray) -> Image.Image:
    """The heat map of ``weights`` (the image's size) laid over ``image``."""
    heat = Image.fromarray(heat_colours(weights), "RGB")
    return Image.blend(image.convert("RGB"), heat, BLEND_ALPHA)


def top_pixels(image: Image.Image, weights: np.ndarray, fraction: float = TOP_FRACTION) -> Image.Image:
    """``image`` with only its top ``fraction`` of pixels by ``weights`` kept, the rest black."""
    flat = np.sort(weights.ravel())[::-1]
    cut = flat[min(flat.size, math.ceil(fraction * flat.size)) - 1]
    # A value threshold, as PAIR's XRAI examples draw their top 30%: an XRAI region is kept or dropped whole.
    # Pixels of no importance at all (most, under a ReLU network's sparse gradients) are never kept.
    keep = (weights >= cut) & (weights > 0)
    pixels = np.asarray(image.convert("RGB")).copy()
    pixels[~keep] = 0
    return Image.fromarray(pixels, "RGB")


def explanation_grid(image: Image.Image, weights: np.ndarray) -> Image.Image:
    """SPEC §9's 2×2 grid, each panel the crop's size: the cropped input, its heat map, the heat map blended
    over it, and the input with only its top 30% pixels."""
    width, height = image.size
    grid = Image.new("RGB", (2 * width, 2 * height))
    panels = (image.convert("RGB"), Image.fromarray(heat_colours(weights), "RGB"), blend(image, weights),
              top_pixels(image, weights))
    for k, panel in enumerate(panels):
        grid.paste(panel, ((k % 2) * width, (k // 2) * height))
    return grid


def box_overlay(image: Image.Image, weights: np.ndarray, box: tuple[float, float, float, float]) -> Image.Image:
    """The heat map blended over ``image`` with the explained detection's box (normalised xyxy) outlined."""
    picture = blend(image, weights)
    width, height = picture.size
    x0, y0, x1, y1 = box
    outline = max(1, round(min(width, height) / 150))
    ImageDraw.Draw(picture).rectangle((x0 * width, y0 * height, x1 * width, y1 * height),
                                      outline=(255, 0, 0), width=outline)
    return picture


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def to_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
