"""What ``/score`` receives, turned into images: the body parsed (raw image bytes or the reference's JSON
form), every image's size read from its header and the request's total checked, and only then decoded.

A dozen 8,000×8,000 1-bit PNGs fit in a few KB of JSON and decode to gigabytes, so the total is bounded
before any pixel is decoded. The app runs `read_items` on a thread, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps

from core.data.validate import ItemError, decode_image, open_header
from storage.settings import Settings

JSON_FORM = ("{\"input_data\": {\"columns\": [\"image\"], \"data\": [<base64 image> or <JSON string with "
             "image_base64>, ...]}}")


class Refused(Exception):
    """A request the endpoint answers with ``status`` and this message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    image: Image.Image
    explain: bool = False
    xai: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Entry:
    """One image of the request before decoding: where it is named, its bytes and its options."""

    where: str
    raw: bytes
    explain: bool = False
    xai: dict[str, Any] = field(default_factory=dict)


def read_items(body: bytes, content_type: str, settings: Settings) -> list[Item]:
    """The request's images, decoded and upright, with their explanation options; Refused (400 for bad
    input, 413 when the images add up to more than ``settings.max_request_pixels``)."""
    entries = _entries(body, content_type)
    headers = [_header(entry, settings.max_image_pixels) for entry in entries]
    _check_total(entries, headers, settings.max_request_pixels)
    items = []
    for entry in entries:
        # Popped, so each image's decoded original is dropped once converted rather than kept to the end.
        items.append(Item(_decode(headers.pop(0), entry.where), entry.explain, entry.xai))
    return items


def _entries(body: bytes, content_type: str) -> list[_Entry]:
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        return _json_entries(body)
    if kind in ("application/octet-stream", "") or kind.startswith("image/"):
        return [_Entry("the request body", body)]
    raise Refused(400, f"content type {kind!r} is not accepted: send image bytes as application/octet-stream "
                       f"or the JSON form {JSON_FORM}")


def _json_entries(body: bytes) -> list[_Entry]:
    try:
        data = json.loads(body)["input_data"]["data"]
    except (ValueError, KeyError, TypeError):
        raise Refused(400, f"the JSON must be {JSON_FORM}") from None
    if not isinstance(data, list) or not data:
        raise Refused(400, "input_data.data must be a non-empty list of images")
    return [_json_entry(entry, f"input_data.data[{i}]") for i, entry in enumerate(data)]


def _json_entry(entry: Any, where: str) -> _Entry:
    entry = entry[0] if isinstance(entry, list) and len(entry) == 1 else entry  # a one-column row
    options: dict[str, Any] = {}
    if isinstance(entry, str) and entry.lstrip().startswith("{"):
        options = _json(entry, where)
    elif isinstance(entry, dict):
        options = entry
    encoded = options.get("image_base64", entry if not options else None)
    if not isinstance(encoded, str):
        raise Refused(400, f"{where}: give the image as a base64 string (or image_base64 in a JSON string)")
    try:
        raw = base64.b64decode(_base64_text(encoded), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, f"{where}: not valid base64") from None
    explain = str(options.get("model_explainability", False)).lower() == "true"
    xai = options.get("xai_parameters") or {}
    if isinstance(xai, str):
        xai = _json(xai, f"{where}.xai_parameters")
    return _Entry(where, raw, explain, xai)


def _base64_text(encoded: str) -> str:
    """The base64 characters alone: ``base64.encodebytes`` (the reference's example) breaks lines every
    76 characters, and browsers give images as ``data:image/png;base64,...`` URLs."""
    if encoded.startswith("data:") and ";base64," in encoded[:100]:
        encoded = encoded.split(";base64,", 1)[1]
    return "".join(encoded.split())


def is_raw(content_type: str) -> bool:
    """Whether the body is one image's bytes (answered with one object) rather than the JSON form (a list)."""
    return content_type.split(";")[0].strip().lower() != "application/json"


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise Refused(400, f"{where}: not valid JSON") from None


def _header(entry: _Entry, max_pixels: int) -> Image.Image:
    try:
        return open_header(entry.raw, max_pixels)
    except ItemError as exc:
        raise Refused(400, f"{entry.where}: {exc} — {exc.fix}") from None


def _check_total(entries: list[_Entry], headers: list[Image.Image], max_pixels: int) -> None:
    """413 naming the first image past ``max_pixels`` when the request's images add up to more."""
    sizes = [header.width * header.height for header in headers]
    total, running = sum(sizes), 0
    for entry, size in zip(entries, sizes, strict=True):
        running += size
        if running > max_pixels:
            raise Refused(413, f"{entry.where}: the request's images add up to {total:,} pixels; the limit is "
                               f"{max_pixels:,} per request (KESTREL_MAX_REQUEST_PIXELS) — send fewer or smaller "
                               "images per request")


def _decode(header: Image.Image, where: str) -> Image.Image:
    try:
        image = decode_image(header)
    except ItemError as exc:
        raise Refused(400, f"{where}: {exc} — {exc.fix}") from None
    # In place, and no conversion of what is RGB already: a copy would hold the pixels twice.
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")
