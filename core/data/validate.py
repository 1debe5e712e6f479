"""Per-item checks: the image file may be read, it decodes and is not a bomb, labels fit the
task, boxes fit the image.

An upload is untrusted: its annotation files name the image paths, so every path is checked
against the upload's folder, and its kind and size, before a byte of it is read.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from dataclasses import replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.base.tasks import LabelKind, Task, spec
from core.data.records import ImageRecord, Instance

SUFFIX_BY_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
                    "WEBP": ".webp", "MPO": ".jpg"}


class ItemError(ValueError):
    """Why one item is refused, with the fix to suggest."""

    def __init__(self, error: str, fix: str) -> None:
        super().__init__(error)
        self.fix = fix


PIXEL_FIX = "downscale the image, or raise KESTREL_MAX_IMAGE_PIXELS if it is genuine"
OUTSIDE_FIX = ("paths must be relative to the dataset folder and stay inside it: no absolute "
               "paths, no '..' climbing out of it, no links pointing outside")


def upload_folder(source: Path, staging_dir: Path) -> Path | None:
    """The folder of the upload ``source`` lies in (the studio stages each under
    ``staging_dir/<id>/``), whose files alone an import may read; None for a path on this machine.

    A folder on this machine is the user's own layout and is not confined: Azure's MLTable samples
    name their images as ``../images/...``, and absolute paths are a documented ``image_url`` form.
    """
    staging = staging_dir.resolve()
    where = source.resolve()
    if where == staging or not where.is_relative_to(staging):
        return None
    return staging / where.relative_to(staging).parts[0]


def image_path_refusal(path: Path, max_bytes: int, inside: Path | None) -> str | None:
    """Why the image file at ``path`` may not be read, told from its status alone (a preview skips it
    without opening it); None when it may. `read_image_file` checks the same on the open file."""
    try:
        real = _inside(path, inside)
        info = os.stat(real)
        _readable(path, info.st_mode, info.st_size, max_bytes)
    except ItemError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read the image file ({exc.strerror})"
    return None


def read_image_file(path: Path, max_bytes: int, inside: Path | None = None) -> bytes:
    """The bytes of the image file at ``path``, refused (ItemError) before reading when it lies
    outside ``inside`` (the upload's folder; None for a folder on this machine), is not a regular
    file (a device such as /dev/zero, a FIFO, a folder) or is larger than ``max_bytes``."""
    real = _inside(path, inside)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ItemError("image file not found", "add the file or fix its path") from None
    except OSError as exc:
        raise ItemError(f"cannot read the image file ({exc.strerror})", "check the file") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _readable(path, info.st_mode, info.st_size, max_bytes)
        # The size is checked again on the bytes read: the file may grow after fstat.
        data = handle.read(max_bytes + 1)
        _readable(path, info.st_mode, len(data), max_bytes)
    return data


def _inside(path: Path, inside: Path | None) -> Path:
    real = path.resolve()  # follows links, so a link pointing outside is outside
    if inside is not None and not real.is_relative_to(inside.resolve()):
        raise ItemError(f"image path {str(path)!r} is outside the uploaded dataset folder", OUTSIDE_FIX)
    return real


def _readable(path: Path, mode: int, size: int, max_bytes: int) -> None:
    if not stat.S_ISREG(mode):
        raise ItemError(f"image path {str(path)!r} is not a regular file (a device, FIFO or folder)",
                        "point the path at an image file")
    if size > max_bytes:
        raise ItemError(f"the image file is {size:,} bytes, above the per-image limit of {max_bytes:,}",
                        "downscale or recompress the image, or raise KESTREL_MAX_IMAGE_BYTES if it is genuine")


def check_image(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    """Width, height and file suffix of an image that fully decodes within the pixel limit."""
    image = open_image(data, max_pixels)
    return image.width, image.height, SUFFIX_BY_FORMAT[image.format or ""]


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The decoded image, refused (ItemError) when it is a bomb, above the pixel limit, corrupt or
    of a format we do not take."""
    return decode_image(open_header(data, max_pixels))


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header read (size and format known, no pixel decoded yet), refused
    (ItemError) when it is not an image, of a format we do not take, or above the pixel limit."""
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit; ours (checked next, from the header) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # above twice PIL's limit, whatever ours says
        raise ItemError(f"the image is above the pixel limit, refused as a decompression bomb "
                        f"({exc})", "downscale the image") from None
    except UnidentifiedImageError:
        raise ItemError("not an image (the file's content is not a known image format)",
                        "remove the file or replace it with a JPEG or PNG") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(f"the image is truncated or corrupt ({exc})",
                        "re-export or re-download the image") from None
    width, height = im.size
    if width * height > max_pixels:
        raise ItemError(f"{width}×{height} = {width * height:,} pixels is above the pixel limit of "
                        f"{max_pixels:,} (a decompression bomb or an oversized image)", PIXEL_FIX)
    if (im.format or "") not in SUFFIX_BY_FORMAT:
        raise ItemError(f"{im.format or 'unknown'} images are not supported", "convert it to JPEG or PNG")
    return im


def decode_image(im: Image.Image) -> Image.Image:
    """``im`` (from `open_header`) with its pixels decoded; refused (ItemError) when they are corrupt."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(f"the image is truncated or corrupt ({exc})",
                        "re-export or re-download the image") from None
    return im


def _clip(value: float, field: str, size: int, where: str) -> float:
    if not math.isfinite(value):  # NaN passes every comparison below and would be stored as NULL
        raise ItemError(f"{where}: {field} is {value}, not a finite number",
                        "give coordinates as finite numbers normalised to 0..1")
    # Rounding in exports overshoots by a fraction of a pixel; one pixel is tolerated and clipped.
    tolerance = max(1.0 / max(size, 1), 1e-6)
    if value < -tolerance or value > 1 + tolerance:
        raise ItemError(f"{where}: {field} {value:g} is outside 0..1",
                        "give coordinates normalised to the image's width and height (0..1)")
    return min(max(value, 0.0), 1.0)


def clean_instance(inst: Instance, index: int, width: int, height: int) -> Instance:
    where = f"box {index + 1} ({inst.label})"
    x0, x1 = (_clip(v, f, width, where) for v, f in ((inst.x0, "topX"), (inst.x1, "bottomX")))
    y0, y1 = (_clip(v, f, height, where) for v, f in ((inst.y0, "topY"), (inst.y1, "bottomY")))
    if x1 <= x0 or y1 <= y0:
        raise ItemError(f"{where} has zero area (topX {x0:g}, bottomX {x1:g}, topY {y0:g}, "
                        f"bottomY {y1:g})", "make bottomX > topX and bottomY > topY, or remove it")
    polygons = tuple(
        tuple(_clip(v, "polygon", width if i % 2 == 0 else height, where) for i, v in enumerate(p))
        for p in inst.polygons
    )
    return replace(inst, x0=x0, y0=y0, x1=x1, y1=y1, polygons=polygons)


def labels_for_task(record: ImageRecord, task: Task) -> tuple[tuple[str, ...], tuple[Instance, ...]]:
    """The record's labels in the task's shape; instances become tags for multi-label."""
    kind = spec(task).label_kind
    if record.kind is None:
        if kind is LabelKind.TAG:
            raise ItemError("the image has no label", "give the image its class name")
        return (), ()
    if kind is LabelKind.TAG:
        if record.kind is not LabelKind.TAG:
            raise ItemError(f"the label is {record.kind.value}, but {task.value} needs one class name",
                            'give "label": "<class>" or import with the matching --task')
        return record.tags, ()
    if kind is LabelKind.TAGS:
        if record.kind in (LabelKind.TAG, LabelKind.TAGS):
            return record.tags, ()
        return tuple(sorted({i.label for i in record.instances})), ()
    if record.kind not in (LabelKind.BOXES, LabelKind.POLYGONS):
        raise ItemError(f"the label is {record.kind.value}, but {task.value} needs boxes",
                        "give a list of boxes, or import with the matching --task")
    if kind is LabelKind.BOXES:
        return (), tuple(replace(i, polygons=()) for i in record.instances)
    for n, inst in enumerate(record.instances):
        if not inst.polygons:
            raise ItemError(f"box {n + 1} ({inst.label}) has no polygon",
                            "add a polygon to every object, or import as image_object_detection")
    return (), record.instances


def clean_labels(
    record: ImageRecord, task: Task, width: int, height: int
) -> tuple[tuple[str, ...], tuple[Instance, ...]]:
    tags, instances = labels_for_task(record, task)
    return tags, tuple(clean_instance(i, n, width, height) for n, i in enumerate(instances))
