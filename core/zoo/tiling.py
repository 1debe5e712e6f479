"""Detections on an image and on its tiles, merged into one answer (SPEC §7, small objects), for both
detector families: torchvision's as tensors (masks pasted back in pixels), YOLO's as Predictions
(normalised boxes and polygons). The windows come from `core.data.tiles`, as in training."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.ops import batched_nms

from core.base.prediction import Detection, Prediction
from core.data.tiles import Window, image_and_tiles

Detect = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


def detect_tiled(detect: Detect, image: torch.Tensor, grid: tuple[int, int], overlap: float,
                 nms_iou: float, max_detections: int) -> dict[str, torch.Tensor]:
    """``detect`` (CHW images to torchvision-style outputs: pixel xyxy ``boxes``, ``scores``, ``labels``,
    optional ``masks`` [N, 1, h, w]) on the whole image and its tiles; tile boxes shifted back into the
    image, same-label duplicates removed by NMS at ``nms_iou``, the best ``max_detections`` kept. Masks
    are pasted into the full image for kept detections only."""
    height, width = image.shape[-2:]
    windows = image_and_tiles(width, height, grid, overlap)
    outputs = detect([image[..., y0:y1, x0:x1] for x0, y0, x1, y1 in windows])
    source = [(j, k) for j, out in enumerate(outputs) for k in range(len(out["scores"]))]
    shift = torch.tensor([[windows[j][0], windows[j][1]] * 2 for j, _ in source], dtype=torch.float32)
    boxes = torch.cat([out["boxes"].float() for out in outputs]) + shift.reshape(-1, 4)
    scores, labels = torch.cat([o["scores"] for o in outputs]), torch.cat([o["labels"] for o in outputs])
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_detections]
    merged = {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
    if all("masks" in out for out in outputs):
        merged["masks"] = outputs[0]["masks"].new_zeros((len(keep), 1, height, width))
        for row, index in enumerate(keep.tolist()):
            j, k = source[index]
            x0, y0, x1, y1 = windows[j]
            merged["masks"][row, :, y0:y1, x0:x1] = outputs[j]["masks"][k]
    return merged


def merge_predictions(parts: Sequence[Prediction], windows: Sequence[Window], width: int, height: int,
                      nms_iou: float, max_detections: int) -> Prediction:
    """Predictions on ``windows`` of one image (coordinates relative to each window) as one Prediction on
    the image: moved into the image's coordinates, same-label duplicates removed by NMS at ``nms_iou``,
    the best ``max_detections`` kept."""
    moved: list[Detection] = []
    for part, (x0, y0, x1, y1) in zip(parts, windows, strict=True):
        sx, sy, ox, oy = (x1 - x0) / width, (y1 - y0) / height, x0 / width, y0 / height
        for d in part.detections:
            polygons = tuple(tuple(ox + v * sx if n % 2 == 0 else oy + v * sy for n, v in enumerate(p))
                             for p in d.polygons)
            moved.append(Detection(d.label, d.score, round(ox + d.x0 * sx, 6), round(oy + d.y0 * sy, 6),
                                   round(ox + d.x1 * sx, 6), round(oy + d.y1 * sy, 6), polygons=polygons))
    if not moved:
        return Prediction(detections=[])
    boxes = torch.tensor([[d.x0 * width, d.y0 * height, d.x1 * width, d.y1 * height] for d in moved])
    names = sorted({d.label for d in moved})
    labels = torch.tensor([names.index(d.label) for d in moved])
    keep = batched_nms(boxes, torch.tensor([d.score for d in moved]), labels, nms_iou)[:max_detections]
    return Prediction(detections=[moved[k] for k in keep.tolist()])
