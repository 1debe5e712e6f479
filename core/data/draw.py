"""Labels drawn on images: boxes with captions, translucent polygons and tag chips.

The one drawing module for ground truth and predictions alike (PIL only, no UI imports).
A class's colour is the palette entry at its index in the dataset version's class list,
so it is the same on every page and in every picture.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from core.data.records import ImageRecord

Box = tuple[float, float, float, float]  # normalised xyxy

# Kelly's / Tableau-like distinct colours, strongest first so small class lists look varied.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)
UNKNOWN_COLOUR = (200, 200, 200)  # a label missing from the class list
POLYGON_ALPHA = 80  # of 255: the object stays visible under its fill


@dataclass(frozen=True)
class Overlay:
    """One thing to draw: a tag (no box, no polygons), a box, or a box with polygons."""

    label: str
    box: Box | None = None
    polygons: tuple[tuple[float, ...], ...] = ()  # normalised flat x, y pairs
    score: float | None = None

    @property
    def caption(self) -> str:
        return self.label if self.score is None else f"{self.label} {self.score:.2f}"

    @property
    def is_tag(self) -> bool:
        return self.box is None and not self.polygons


def class_colour(index: int) -> tuple[int, int, int]:
    """The colour of the class at ``index`` in its class list (the palette repeats)."""
    return PALETTE[index % len(PALETTE)] if index >= 0 else UNKNOWN_COLOUR


def colour_for(label: str, classes: Sequence[str]) -> tuple[int, int, int]:
    try:
        return class_colour(list(classes).index(label))
    except ValueError:
        return UNKNOWN_COLOUR


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (relative luminance)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow >= 10.1 scales its built-in font when FreeType is present; no font files needed.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def overlays_from_record(record: ImageRecord) -> list[Overlay]:
    """The labels of an imported record, e.g. for an import preview."""
    tags = [Overlay(tag) for tag in record.tags]
    return tags + [Overlay(i.label, (i.x0, i.y0, i.x1, i.y1), i.polygons) for i in record.instances]


def thumbnail(image: Image.Image, max_side: int) -> Image.Image:
    """An RGB copy of ``image`` no larger than ``max_side`` on its longer side."""
    copy = image.convert("RGB")
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return copy


def draw_labels(image: Image.Image, classes: Sequence[str], overlays: Iterable[Overlay]) -> Image.Image:
    """A copy of ``image`` with ``overlays`` drawn in their class colours.

    Sizes of lines and captions follow the image's size, so draw on the size you show
    (for a grid, make the thumbnail first, then draw on it).
    """
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    short_side = min(base.size)
    line_width = max(2, round(short_side / 160))
    font = _font(max(11, round(short_side / 22)))
    items = list(overlays)
    for item in items:
        if not item.is_tag:
            _draw_instance(draw, base.size, item, colour_for(item.label, classes), line_width)
    # Captions after all shapes, so no outline crosses a caption.
    for item in items:
        if not item.is_tag:
            _draw_caption(draw, base.size, item, colour_for(item.label, classes), font)
    _draw_chips(draw, [i for i in items if i.is_tag], classes, font)
    return Image.alpha_composite(base, layer).convert("RGB")


def _pixels(flat: Sequence[float], size: tuple[int, int]) -> list[tuple[float, float]]:
    w, h = size
    return [(x * w, y * h) for x, y in zip(flat[0::2], flat[1::2])]


def _draw_instance(draw: ImageDraw.ImageDraw, size: tuple[int, int], item: Overlay,
                   colour: tuple[int, int, int], line_width: int) -> None:
    for polygon in item.polygons:
        if len(polygon) >= 6:
            points = _pixels(polygon, size)
            draw.polygon(points, fill=(*colour, POLYGON_ALPHA))
            draw.line([*points, points[0]], fill=(*colour, 255), width=max(1, line_width // 2))
    if item.box is not None:
        (x0, y0), (x1, y1) = _pixels(item.box, size)
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                       outline=(*colour, 255), width=line_width)


def _draw_caption(draw: ImageDraw.ImageDraw, size: tuple[int, int], item: Overlay,
                  colour: tuple[int, int, int], font: ImageFont.ImageFont | ImageFont.FreeTypeFont
                  ) -> None:
    if item.box is not None:
        x0, y0 = _pixels(item.box[:2], size)[0]
    else:  # a polygon without a box: caption at its top-left extent
        points = [p for polygon in item.polygons for p in _pixels(polygon, size)]
        x0, y0 = min(p[0] for p in points), min(p[1] for p in points)
    left, top, right, bottom = draw.textbbox((0, 0), item.caption, font=font)
    pad = max(1, (bottom - top) // 5)
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    # Above the box when there is room, otherwise just inside its top edge.
    y = y0 - height if y0 - height >= 0 else y0
    x = min(max(0.0, x0), max(0.0, size[0] - width))
    draw.rectangle((x, y, x + width, y + height), fill=(*colour, 255))
    draw.text((x + pad - left, y + pad - top), item.caption, font=font, fill=(*text_colour(colour), 255))


def _draw_chips(draw: ImageDraw.ImageDraw, tags: list[Overlay], classes: Sequence[str],
                font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """Tags as rounded chips in the top-left corner, one under the other."""
    y = 4.0
    for tag in tags:
        colour = colour_for(tag.label, classes)
        left, top, right, bottom = draw.textbbox((0, 0), tag.caption, font=font)
        pad = max(2, (bottom - top) // 3)
        width, height = right - left + 2 * pad, bottom - top + 2 * pad
        draw.rounded_rectangle((4, y, 4 + width, y + height), radius=height // 2,
                               fill=(*colour, 235), outline=(255, 255, 255, 200))
        draw.text((4 + pad - left, y + pad - top), tag.caption, font=font,
                  fill=(*text_colour(colour), 255))
        y += height + 3
