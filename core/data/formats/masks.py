"""Binary mask PNGs: ``<root>/images/<stem>.<ext>`` + ``<root>/masks/<class>/<stem>.png``.

Each connected component of a class's mask is one instance of that class.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.base.tasks import LabelKind
from core.data.formats.base import files_with_suffix, formats, is_image, relative_name
from core.data.masks import mask_to_polygons, polygon_extent
from core.data.records import ImageRecord, Instance, Problem


class MaskError(ValueError):
    def __init__(self, error: str, fix: str) -> None:
        super().__init__(error)
        self.fix = fix


def class_dirs(root: Path) -> list[Path]:
    masks = root / "masks"
    if not masks.is_dir():
        return []
    return sorted(d for d in masks.iterdir() if d.is_dir() and not d.name.startswith("."))


def image_size(path: Path) -> tuple[int, int]:
    """Width and height from the header only; pixels are decoded by the importer."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise MaskError(f"cannot read {path.name}: {exc}",
                        "replace it with a valid image") from None


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    mask_size = image_size(path)
    if mask_size != size:
        raise MaskError(f"mask is {mask_size[0]}×{mask_size[1]} but the image is "
                        f"{size[0]}×{size[1]}", "save the mask at the image's exact size")
    with Image.open(path) as im:
        pixels = np.asarray(im)
        if im.mode in ("LA", "PA", "RGBA"):  # an opaque alpha channel is not the object
            pixels = pixels[..., :-1]
    # Nonzero in any colour channel is object; for palette PNGs that is any index but 0.
    return pixels.any(axis=2) if pixels.ndim == 3 else pixels != 0


def instances_of(image: Path, size: tuple[int, int], classes: list[Path],
                 root: Path) -> tuple[Instance, ...]:
    instances = []
    for folder in classes:
        mask_file = folder / f"{image.stem}.png"
        if not mask_file.is_file():
            continue
        try:
            mask = load_mask(mask_file, size)
        except MaskError as exc:
            raise MaskError(f"{relative_name(mask_file, root)}: {exc}", exc.fix) from None
        for polygon in mask_to_polygons(mask):
            instances.append(Instance(folder.name, *polygon_extent([polygon]), polygons=(polygon,)))
    return tuple(instances)


def orphan_masks(classes: list[Path], stems: set[str], root: Path) -> Iterator[Problem]:
    for folder in classes:
        for mask in files_with_suffix(folder, ".png"):
            if mask.stem not in stems:
                yield Problem(relative_name(mask, root), None, "mask has no image",
                              f"add images/{mask.stem}.<jpg|png> or delete the mask")


@formats.register("masks")
class MasksFormat:
    def detect(self, path: Path) -> bool:
        return (path / "images").is_dir() and bool(class_dirs(path))

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        classes = class_dirs(path)
        images = sorted(p for p in (path / "images").iterdir() if p.is_file() and is_image(p))
        for image in images:
            name = relative_name(image, path)
            try:
                size = image_size(image)
                instances = instances_of(image, size, classes, path)
            except MaskError as exc:
                yield Problem(name, None, str(exc), exc.fix)
                continue
            kind = LabelKind.POLYGONS if instances else None
            yield ImageRecord(image.resolve(), name, name, None, kind, (), instances, *size)
        yield from orphan_masks(classes, {p.stem for p in images}, path)
