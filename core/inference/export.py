"""Export a trained model (a trial's artifact folder) to ONNX or TorchScript, with a JSON sidecar that
says how to feed the file and read its outputs without Kestrel, and check the export against PyTorch.

timm classifiers and torchvision detectors go through torch's own exporters; YOLO models through
ultralytics' exporter. Parity tolerances (`check_parity`, on the same preprocessed input): class
probabilities and detection scores within ``PROBS_ATOL`` = 1e-4 absolute; boxes and YOLO's raw outputs
within ``BOX_RTOL`` = 1e-3 relative (to max(1, |value|), so pixel coordinates near 0 get 1e-3 px); masks
within ``MASK_ATOL`` = 1e-3 absolute; labels exactly.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as F

from core.base.errors import ConfigError, InputError
from core.base.tasks import Task
from core.data.augment import IMAGENET_MEAN, IMAGENET_STD
from core.zoo.base import SETTINGS_FILE
from core.zoo.families import family_named

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # ultralytics' names for the same two
# torchvision's detectors need opset 11 or later (dynamic resize, NMS, RoIAlign); 17 is what
# onnxruntime has run for years. The TorchScript-based exporter is used because torch.export (the newer
# one) fails on every torchvision detector here and took 5 s instead of 0.7 s for a small classifier.
OPSET = 17
PROBS_ATOL = 1e-4
BOX_RTOL = 1e-3
MASK_ATOL = 1e-3
TOLERANCES = {"probs": PROBS_ATOL, "scores": PROBS_ATOL, "labels": 0.0, "boxes": BOX_RTOL,
              "masks": MASK_ATOL, "output0": BOX_RTOL, "output1": BOX_RTOL}
RELATIVE = frozenset({"boxes", "output0", "output1"})  # outputs in pixels: compared relative to size
YOLO_PAD = 114  # ultralytics' letterbox grey


@dataclass(frozen=True)
class Parity:
    """How far an exported model's outputs are from the PyTorch model's, per output name."""

    differences: dict[str, float]  # max abs difference (relative for RELATIVE outputs)
    tolerances: dict[str, float]
    problems: list[str]  # outputs that could not be compared (shapes differ)

    @property
    def ok(self) -> bool:
        return not self.problems and all(self.differences[k] <= self.tolerances[k] for k in self.differences)


@dataclass
class _Recipe:
    """What one family's model looks like from outside: an eager module from preprocessed input to
    output tensors, how to preprocess images for it, and how to describe both in the sidecar."""

    module: nn.Module  # returns a tensor or a list of tensors, in ``outputs`` order
    example: Tensor  # an input to trace with
    input_spec: dict[str, Any]  # name, shape, dtype, preprocessing
    outputs: dict[str, str]  # name -> what it holds
    dynamic_axes: dict[str, dict[int, str]]
    is_scripted: bool  # TorchScript by scripting (data-dependent control flow), else by tracing
    prepare: Callable[[Sequence[Image.Image]], list[Tensor]]  # model inputs, one forward each
    written: nn.Module | None = None  # what the file holds, where it differs from ``module`` (same numbers)


def export_model(artifact_dir: Path, fmt: ExportFormat, out_dir: Path) -> Path:
    """Export the model saved in ``artifact_dir`` to ``out_dir/model.onnx`` or ``model.torchscript`` and
    write its sidecar (``model.onnx.json``) beside it; returns the model file's path."""
    if fmt not in FORMATS:
        raise ConfigError("format", f"cannot export to {fmt!r}", FORMATS,
                          difflib.get_close_matches(str(fmt).lower(), FORMATS, n=1))
    settings = _settings(artifact_dir)
    recipe = _recipe(artifact_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"model{SUFFIXES[fmt]}"
    # Written under a temporary name and renamed, so a failed export never leaves half a model.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        staged = Path(tmp) / target.name
        if settings["family"] == "ultralytics":
            staged = _export_yolo(recipe.module, settings, staged, fmt)
        else:
            _export_torch(recipe, fmt, staged)
        sidecar = Path(tmp) / "sidecar.json"
        sidecar.write_text(json.dumps(_sidecar(recipe, settings, fmt, target.name), indent=2))
        os.replace(staged, target)
        os.replace(sidecar, sidecar_path(target))
    return target


def sidecar_path(exported: Path) -> Path:
    """Where the JSON description of an exported model lies: ``model.onnx`` -> ``model.onnx.json``."""
    return exported.with_name(exported.name + ".json")


def check_parity(exported: Path, artifact_dir: Path, images: Sequence[Image.Image] = ()) -> Parity:
    """Run an exported model (ONNX with onnxruntime, TorchScript with torch.jit) and the PyTorch model
    of ``artifact_dir`` on the same preprocessed ``images`` (one random image when none are given) and
    measure how far their outputs are apart; `Parity.ok` says whether that is within TOLERANCES."""
    recipe = _recipe(artifact_dir, _settings(artifact_dir))
    run = _runner(exported)
    names = list(recipe.outputs)
    if not images:
        pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        images = [Image.fromarray(pixels)]
    differences, problems = dict.fromkeys(names, 0.0), []
    for x in recipe.prepare(images):
        with torch.inference_mode():
            expected = [t.numpy() for t in _tensors(recipe.module(x))]
        got = run(x)
        if len(got) != len(names):
            problems.append(f"{len(got)} outputs exported, {len(names)} in PyTorch")
        elif "boxes" in names:
            got = _aligned(expected, got, names)
        for name, want, have in zip(names, expected, got):
            if want.shape != have.shape:
                problems.append(f"{name}: shape {have.shape} exported, {want.shape} in PyTorch")
            elif want.size:
                gap = np.abs(have.astype(np.float64) - want)
                if name in RELATIVE:
                    gap /= np.maximum(1.0, np.abs(want))
                differences[name] = max(differences[name], float(gap.max()))
    return Parity(differences, {n: TOLERANCES[n] for n in names}, problems)


# --- the three families ---------------------------------------------------------------------------

def _settings(artifact_dir: Path) -> dict[str, Any]:
    settings_file = artifact_dir / SETTINGS_FILE
    if not settings_file.is_file():
        raise InputError(str(artifact_dir), f"has no {SETTINGS_FILE}",
                         "point at a trial's artifact folder or a registered model version")
    return json.loads(settings_file.read_text())


def _recipe(artifact_dir: Path, settings: dict[str, Any]) -> _Recipe:
    builders = {"timm": _classifier, "torchvision": _detector, "ultralytics": _yolo}
    family = settings.get("family")
    if family not in builders:
        raise ConfigError(f"{artifact_dir / SETTINGS_FILE}: family",
                          f"models of family {family!r} cannot be exported to {' or '.join(FORMATS)}",
                          sorted(builders))
    predictor: Any = family_named(family).load(artifact_dir, "cpu")
    return builders[family](predictor, settings)


class _Probabilities(nn.Module):
    """The classifier with the predictor's last step: softmax over classes, or a sigmoid per label."""

    def __init__(self, model: nn.Module, is_multilabel: bool) -> None:
        super().__init__()
        self.model, self.is_multilabel = model, is_multilabel

    def forward(self, images: Tensor) -> Tensor:
        logits = self.model(images)
        return logits.sigmoid() if self.is_multilabel else logits.softmax(dim=1)


def _classifier(predictor: Any, settings: dict[str, Any]) -> _Recipe:
    is_multilabel = predictor.task is Task.MULTILABEL
    crop, resize = predictor.crop_size, predictor.resize_size
    threshold = f"; a label is predicted at probability >= {predictor.threshold}" if is_multilabel else ""
    written = None
    if getattr(predictor.model, "dynamic_img_size", False):
        # timm's ViTs, made here to take any crop size, resample their position embedding at each call
        # with an antialiased bicubic resize ONNX has no operator for; resampled once to the crop size,
        # the same numbers need no resize in the graph.
        fixed = copy.deepcopy(predictor.model)
        fixed.set_input_size(img_size=(crop, crop))
        written = _Probabilities(fixed, is_multilabel).eval()
    return _Recipe(
        module=_Probabilities(predictor.model, is_multilabel).eval(),
        example=torch.rand(2, 3, crop, crop, generator=torch.Generator().manual_seed(0)),
        input_spec={"name": "images", "shape": ["batch", 3, crop, crop], "dtype": "float32",
                    "layout": "NCHW", "color": "RGB", "value_range": [0.0, 1.0],
                    "resize": f"shorter side to {resize} px (bilinear, antialiased), then the centre "
                              f"{crop}x{crop} square",
                    "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        outputs={"probs": f"[batch, classes]: {'sigmoid per label' if is_multilabel else 'softmax'} "
                          f"probabilities, in the order of `classes`{threshold}"},
        dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}}, is_scripted=False,
        prepare=lambda images: [predictor.preprocess(list(images))], written=written,
    )


class _Detections(nn.Module):
    """A torchvision detector taking one image and returning plain tensors, labels counted from 0."""

    def __init__(self, model: nn.Module, has_masks: bool) -> None:
        super().__init__()
        self.model, self.has_masks = model, has_masks

    def forward(self, image: Tensor) -> list[Tensor]:
        out = self.model([image])
        # Scripted, torchvision's detectors return (losses, detections); traced, the detections only.
        found = out[1][0] if torch.jit.is_scripting() else out[0]
        result = [found["boxes"], found["scores"], found["labels"] - 1]
        if self.has_masks:
            result.append(found["masks"])
        return result


def _detector(predictor: Any, settings: dict[str, Any]) -> _Recipe:
    s = predictor.settings
    has_masks = predictor.task is Task.SEGMENTATION
    outputs = {"boxes": "[detections, 4]: x0, y0, x1, y1 in pixels of the input image",
               "scores": "[detections]: confidence, best first",
               "labels": "[detections]: index into `classes`"}
    if has_masks:
        outputs["masks"] = (f"[detections, 1, height, width]: mask probability per pixel of the input image "
                            f"(Kestrel cuts at {s.mask_pixel_score_threshold})")
    axes = {"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in outputs}}
    if has_masks:
        axes["masks"] = {0: "detections", 2: "height", 3: "width"}

    def prepare(images: Sequence[Image.Image]) -> list[Tensor]:
        tensors = []
        for image in images:  # as TorchvisionPredictor.predict: upright, bounded by max_size
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            rgb.thumbnail((s.max_size, s.max_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            tensors.append(F.to_dtype(F.pil_to_tensor(rgb), torch.float32, scale=True))
        return tensors

    return _Recipe(
        module=_Detections(predictor.model, has_masks).eval(),
        example=torch.rand(3, s.min_size, s.min_size, generator=torch.Generator().manual_seed(0)),
        input_spec={"name": "image", "shape": [3, "height", "width"], "dtype": "float32", "layout": "CHW",
                    "color": "RGB", "value_range": [0.0, 1.0],
                    "resize": f"inside the model (shorter side to {s.min_size}, longer at most {s.max_size}); "
                              f"Kestrel first shrinks images to fit {s.max_size}x{s.max_size}",
                    "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "normalised_inside_model": True,
                    "tiling": "not inside the exported model" if s.tile_grid_size else "none"},
        outputs=outputs, dynamic_axes=axes, is_scripted=True, prepare=prepare,
    )


class _YoloOutputs(nn.Module):
    """The eager YOLO network's outputs as the exported files give them: output0 (output1: mask prototypes)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> list[Tensor]:
        first = self.net(images)[0]
        return [first] if isinstance(first, Tensor) else list(first)


def _yolo(predictor: Any, settings: dict[str, Any]) -> _Recipe:
    size = int(settings["img_size"])
    has_masks = predictor.task is Task.SEGMENTATION
    extra = " + 32 mask coefficients" if has_masks else ""
    outputs = {"output0": f"[1, 4 + classes{extra}, anchors]: box centre x, centre y, width, height in "
                          "input pixels, then per-class scores; apply the score threshold and NMS yourself"}
    if has_masks:
        outputs["output1"] = (f"[1, 32, {size // 4}, {size // 4}]: mask prototypes; a mask is "
                              "sigmoid(coefficients @ prototypes), cropped to its box")

    def prepare(images: Sequence[Image.Image]) -> list[Tensor]:
        return [F.to_dtype(F.pil_to_tensor(_letterbox(image, size)), torch.float32, scale=True)[None]
                for image in images]

    return _Recipe(
        module=_YoloOutputs(predictor.model).eval(),
        example=torch.zeros(1, 3, size, size),
        input_spec={"name": "images", "shape": [1, 3, size, size], "dtype": "float32", "layout": "NCHW",
                    "color": "RGB", "value_range": [0.0, 1.0],
                    "resize": f"letterbox: longer side to {size} px keeping the aspect ratio, centred on a "
                              f"{size}x{size} canvas of grey {YOLO_PAD}",
                    "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        outputs=outputs, dynamic_axes={}, is_scripted=False, prepare=prepare,
    )


def _letterbox(image: Image.Image, size: int) -> Image.Image:
    rgb = ImageOps.exif_transpose(image).convert("RGB")
    scale = size / max(rgb.size)
    width, height = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
    canvas = Image.new("RGB", (size, size), (YOLO_PAD,) * 3)
    canvas.paste(rgb.resize((width, height), Image.Resampling.BILINEAR), ((size - width) // 2, (size - height) // 2))
    return canvas


# --- writing and running ----------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Both exporters are deprecated upstream in favour of torch.export, which cannot export the
    detectors; the tracer's and the ONNX converter's warnings are about torchvision's and ultralytics'
    own export-aware branches and ops. check_parity is what tells whether the result is right."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(vision)?\.")
        warnings.filterwarnings("ignore", message=".*(deprecated|legacy TorchScript-based|will be removed)")
        yield


def _export_torch(recipe: _Recipe, fmt: str, path: Path) -> None:
    module = recipe.written or recipe.module
    with _quiet_exporters():
        if fmt == "onnx":
            names = [recipe.input_spec["name"]]
            torch.onnx.export(module, (recipe.example,), str(path), input_names=names,
                              output_names=list(recipe.outputs), dynamic_axes=recipe.dynamic_axes,
                              opset_version=OPSET, dynamo=False)
        else:
            compiled = torch.jit.script(module) if recipe.is_scripted else torch.jit.trace(module, recipe.example)
            torch.jit.save(compiled, str(path))


def _export_yolo(outputs: nn.Module, settings: dict[str, Any], path: Path, fmt: str) -> Path:
    """ultralytics' exporter on the network; loading the predictor already closed its network paths."""
    from ultralytics import YOLO

    from core.zoo.ultralytics_env import keep_threads
    from core.zoo.yolo_predictor import YOLO_TASKS

    net = outputs.net  # type: ignore[union-attr]
    yolo = YOLO(f"{settings['architecture']}.yaml", task=YOLO_TASKS[Task(settings["task"])])
    net.args, net.task = yolo.model.args, yolo.model.task  # what the exporter reads from a YOLO model
    net.pt_path = str(path.with_suffix(".pt"))  # it writes beside this name, in our temporary folder
    yolo.model = net
    # No onnxslim pass: it would be one more dependency, and ultralytics would try to install it.
    options = {"simplify": False} if fmt == "onnx" else {}
    # Its device selection sets torch's thread count for the whole process.
    with keep_threads(), _quiet_exporters():
        written = yolo.export(format=fmt, imgsz=int(settings["img_size"]), batch=1, device="cpu",
                              dynamic=False, **options)
    return Path(written)


def _sidecar(recipe: _Recipe, settings: dict[str, Any], fmt: str, file_name: str) -> dict[str, Any]:
    names = list(recipe.outputs)
    return {
        "file": file_name, "format": fmt, **({"opset": OPSET} if fmt == "onnx" else {}),
        "exporter": "ultralytics" if settings["family"] == "ultralytics" else "torch",
        "task": settings["task"], "family": settings["family"], "architecture": settings["architecture"],
        "classes": list(settings["classes"]), "input": recipe.input_spec,
        "outputs": [{"name": n, "meaning": recipe.outputs[n]} for n in names],
        "parity_tolerance": {n: TOLERANCES[n] for n in names},
        "settings": {k: v for k, v in settings.items() if k not in ("classes", "family", "architecture", "task")},
    }


def _runner(exported: Path) -> Callable[[Tensor], list[np.ndarray]]:
    if exported.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # share the cores as torch is told to
        session = ort.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda x: list(session.run(None, {input_name: x.numpy()}))
    if exported.suffix != ".torchscript":
        raise InputError(str(exported), "is neither an ONNX nor a TorchScript export",
                         f"give a file ending in {' or '.join(SUFFIXES.values())}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")
        module = torch.jit.load(str(exported), map_location="cpu")

    def run(x: Tensor) -> list[np.ndarray]:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*always returns a \\(Losses, Detections\\)")
            return [t.numpy() for t in _tensors(module(x))]

    return run


def _tensors(out: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [out] if isinstance(out, Tensor) else list(out)


def _aligned(expected: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """``got``'s detections reordered to pair with ``expected``'s, each the closest box of its label: scores
    a hair apart may leave NMS in either order, which is no disagreement (seen with RetinaNet)."""
    boxes, labels = names.index("boxes"), names.index("labels")
    if expected[boxes].shape != got[boxes].shape:
        return got
    gap = np.abs(expected[boxes][:, None, :] - got[boxes][None, :, :]).max(axis=2)
    gap[expected[labels][:, None] != got[labels][None, :]] = np.inf
    order: list[int] = []
    for row in gap:
        row[order] = np.inf
        order.append(int(row.argmin()))
    return [array[order] for array in got]
