"""The wizard's training-mode step: AutoMode, one model or a sweep; the models with their starting weights;
the epochs, image size and batch size every trial uses; a sweep's sub-spaces edited as tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
import yaml

from core.base.params import TrainingParams
from core.base.tasks import Task
from core.sweep import estimate
from core.train import recipe
from core.zoo.catalog import AUTOMODE_SAMPLING, CATALOG, size_text
from ui import pretrained as _pretrained
from ui import trial_time as _trial_time
from ui import wizard_job as _job

MODELS = {  # what the wizard offers first; any other name of the model libraries can be typed in
    Task.CLASSIFICATION: ["resnet18", "resnet50", "mobilenetv2", "seresnext", "vits16r224", "vitb16r224"],
    Task.DETECTION: ["yolov5", "yolo11n", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet18_fpn",
                     "retinanet_resnet50_fpn"],
    Task.SEGMENTATION: ["maskrcnn_resnet50_fpn", "maskrcnn_resnet18_fpn", "yolo11n-seg"],
}
MODELS[Task.MULTILABEL] = MODELS[Task.CLASSIFICATION]
KINDS = ["choice", "uniform", "loguniform", "quniform", "qloguniform", "normal", "lognormal", "randint"]
SAMPLINGS = ["random", "grid", "bayesian"]
SIZE_KEYS = {"timm": ("training_crop_size", "validation_crop_size"), "torchvision": ("min_size", "max_size"),
             "ultralytics": ("img_size",)}  # the parameters that set a family's image size
LABELS = {"training_crop_size": "Training crop (px)", "validation_crop_size": "Validation crop (px)",
          "img_size": "YOLO image size (px)", "min_size": "Shorter side (px)", "max_size": "Longer side at most (px)",
          "training_batch_size": "Training batch size", "validation_batch_size": "Validation batch size"}
SIZE_HELP = ("Left empty, each trial's recipe decides: your images' typical size rounded down to a multiple of 32 "
             "(never enlarged), at most the model's usual size. Smaller trains faster, larger sees more detail.")
BATCH_HELP = ("Left empty, each trial's recipe decides: the model's default, or a batch sized for about 20 steps "
              "an epoch when it trains from scratch. Smaller batches need less memory.")
RATE_HELP = ("Left empty, the trial's recipe sets it: the reference's fine-tuning rate when pretrained weights "
             "are to be had, AdamW's rate for training from scratch otherwise.")


def mode_step(doc: dict[str, Any], problems: list[str]) -> None:
    modes = ["AutoMode", "One model", "Sweep"]
    mode = "Sweep" if doc.get("search_space") else "One model" if doc["limits"].get("max_trials") == 1 else "AutoMode"
    mode = st.radio("Training mode", modes, index=modes.index(mode), horizontal=True,
                    help="AutoMode picks models and hyperparameters itself; a sweep tries what you lay out.")
    params = dict(doc.get("training_parameters") or {})
    models = MODELS[Task(doc["task"])]
    epochs = st.number_input("Epochs", 1, 1000, int(params.get("number_of_epochs", _trial_time.DEFAULT_EPOCHS)))
    params["number_of_epochs"] = int(epochs)
    doc["training_parameters"] = params  # the choices below edit it in place; estimates read it already
    here = _trial_time.Here.read(doc)
    if mode == "One model":
        _one_model(doc, params, models, here)
    else:
        params.pop("model_name", None)
        doc["limits"]["max_trials"] = max(2, int(doc["limits"].get("max_trials", 10)))
        if mode == "AutoMode":
            doc.pop("search_space", None)
            # Written out so the file says how AutoMode searches (it does so whatever a file says).
            doc.setdefault("sweep", {})["sampling_algorithm"] = AUTOMODE_SAMPLING
            doc["limits"]["max_trials"] = trials_input(doc["limits"], "wizard_auto_trials")
            st.info(_job.automode_sentence(doc, here))
            weights_lines(_trial_time.planned_models(doc, here))
        else:
            is_new = not doc.get("search_space")
            doc["search_space"] = _space_editor(doc.get("search_space") or [{}], models, problems)
            sweep = doc.setdefault("sweep", {})
            if is_new:  # a sweep starts at random sampling, not at what AutoMode wrote
                sweep.pop("sampling_algorithm", None)
            current = str(sweep.get("sampling_algorithm", "random")).lower()
            sweep["sampling_algorithm"] = st.selectbox(
                "Sampling", SAMPLINGS, index=SAMPLINGS.index(current) if current in SAMPLINGS else 0,
                format_func=lambda a: _job.SAMPLING[a],
                help="Random tries points at random; grid every combination of choice values; Bayesian "
                     "learns from the finished trials where to look next.")
    _training_inputs(doc, params, here, _trial_time.planned_models(doc, here))


def _one_model(doc: dict[str, Any], params: dict[str, Any], models: list[str], here: _trial_time.Here) -> None:
    doc["limits"]["max_trials"] = 1
    doc.pop("search_space", None)
    doc.pop("sweep", None)
    _model_table(doc, models, here)
    current = params.get("model_name", models[0])
    params["model_name"] = st.selectbox("Model", [*models, *([current] if current not in models else [])],
                                        index=[*models, current].index(current), accept_new_options=True)
    st.caption(f"{params['model_name']}: {_pretrained.sentence(params['model_name'])}. "
               f"Time per trial on this machine: {_trial_time.time_per_trial(doc, here)}.")
    if _pretrained.SCRATCH in _pretrained.sentence(params["model_name"]):
        st.page_link("pages/weights.py", label="Import pretrained weights", icon=":material/download:")
    rate = st.number_input("Learning rate", 1e-6, 1.0, params.get("learning_rate"), format="%.5f",
                           placeholder="the recipe's", help=RATE_HELP)
    if rate is None:
        params.pop("learning_rate", None)
    else:
        params["learning_rate"] = float(rate)


def weights_lines(models: list[str], *, link: bool = True) -> None:
    """Each model's starting weights, before anything trains; a link to import them where there are none."""
    sentences = {m: _pretrained.sentence(m) for m in models}
    st.markdown("**Starting weights:** " + "; ".join(f"{m} — {said}" for m, said in sentences.items()))
    if link and any(_pretrained.SCRATCH in said for said in sentences.values()):
        st.page_link("pages/weights.py", label="Import pretrained weights", icon=":material/download:")


def _training_inputs(doc: dict[str, Any], params: dict[str, Any], here: _trial_time.Here, models: list[str]) -> None:
    """Image size (the parameters of the chosen models' families) and batch size; empty = the recipe's."""
    task = Task(doc["task"])
    suggested: dict[str, int] = {}
    for model in models:
        family = recipe.family_of(model, task)
        sized = recipe.sized(task, family, here.image_sizes, here.train_images or 0)
        suggested |= {k: int(sized.get(k, TrainingParams.model_fields[k].default)) for k in SIZE_KEYS[family]}
    typical = (f"typically {here.image_sizes.short} by {here.image_sizes.long} pixels" if here.image_sizes
               else "sizes not known yet")
    st.markdown("**Image size and batch size**")
    st.caption(f"Left empty, each trial's recipe decides, from your images ({typical}) and the model.")
    keys = [*suggested, "training_batch_size", "validation_batch_size"]
    for column, key in zip(st.columns(len(keys)), keys, strict=True):
        low, high = _range(key)
        is_size = key in suggested
        chosen = column.number_input(
            LABELS[key], low, high, int(params[key]) if key in params else None, step=32 if is_size else 1,
            placeholder=f"auto: {suggested[key]}" if is_size else "auto", key=f"wizard_{key}",
            help=SIZE_HELP if is_size else BATCH_HELP)
        if chosen is None:
            params.pop(key, None)
        else:
            params[key] = int(chosen)


def _range(key: str) -> tuple[int, int]:
    """The bounds the training parameters accept for ``key``."""
    meta = TrainingParams.model_fields[key].metadata
    return (next(int(m.ge) for m in meta if getattr(m, "ge", None) is not None),
            next(int(m.le) for m in meta if getattr(m, "le", None) is not None))


def _model_table(doc: dict[str, Any], models: list[str], here: _trial_time.Here) -> None:
    """The offered models for the task: size, speed class on a CPU, time per trial here, starting weights
    and what each is good for."""
    guesses = _trial_time.estimates(doc, models, here) or {}
    rows = [{"model": m, "size (parameters)": size_text(m),
             "speed on a CPU": CATALOG[m].cpu_speed if m in CATALOG else "",
             "time per trial here": estimate.say(g.seconds) if (g := guesses.get(m)) else "not run here yet",
             "pretrained weights": _pretrained.sentence(m).removeprefix("pretrained: "),
             "good for": CATALOG[m].good_for if m in CATALOG else ""} for m in models]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="wizard_models")


def trials_input(limits: dict[str, Any], key: str) -> int:
    """The one trial count (``limits.max_trials``), asked on the mode step for AutoMode and on Limits."""
    return int(st.number_input("Max trials", 2, 1000, max(2, int(limits.get("max_trials", 10))), key=key,
                               help="How many models and settings to try; the job also stops at its timeout."))


def _space_editor(space: list[dict[str, Any]], models: list[str], problems: list[str]) -> list[dict[str, Any]]:
    """One table per model (a sub-space): parameter, distribution, and its values or bounds."""
    count = st.number_input("Models in the sweep", 1, 6, len(space))
    out = []
    chosen_all: list[str] = []
    for i in range(int(count)):
        sub = space[i] if i < len(space) else {}
        st.markdown(f"**Sub-space {i + 1}**")
        model = sub.get("model_name", {}).get("values", [models[min(i, len(models) - 1)]])
        chosen = st.multiselect("Models", sorted({*models, *model}), default=model, key=f"space-{i}-models",
                                accept_new_options=True)
        if chosen:
            weights_lines(chosen, link=False)
        chosen_all += chosen
        rows = [{"parameter": k, "distribution": v.get("type", "choice") if isinstance(v, dict) else "choice",
                 "values / bounds": _bounds(v)} for k, v in sub.items() if k != "model_name"]
        rows = rows or [{"parameter": "learning_rate", "distribution": "uniform", "values / bounds": "0.0001, 0.01"}]
        table = st.data_editor(pd.DataFrame(rows), num_rows="dynamic", key=f"space-{i}", hide_index=True,
                               column_config={"distribution": st.column_config.SelectboxColumn(options=KINDS)})
        entry: dict[str, Any] = {"model_name": {"type": "choice", "values": chosen}}
        for _, row in table.dropna(subset=["parameter"]).iterrows():
            name, text = str(row["parameter"]).strip(), row["values / bounds"]
            try:
                entry[name] = _distribution(str(row["distribution"]), "" if pd.isna(text) else str(text))
            except (yaml.YAMLError, ValueError) as exc:
                entry[name] = str(text)  # kept as typed, so the row still shows it to be fixed
                problems.append(f"Sub-space {i + 1}, {name}: {exc}")
                st.error(problems[-1])
        out.append(entry)
    if any(_pretrained.SCRATCH in _pretrained.sentence(m) for m in chosen_all):
        st.page_link("pages/weights.py", label="Import pretrained weights", icon=":material/download:")
    return out


def _bounds(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    if value.get("type") == "choice":
        return ", ".join(str(v) for v in value.get("values", []))
    return ", ".join(str(value[k]) for k in ("min_value", "max_value", "mu", "sigma", "q", "upper") if k in value)


def _distribution(kind: str, text: str) -> dict[str, Any]:
    """A search-space entry from the editor's row; ValueError says which value cannot be read."""
    values = []
    for piece in (v.strip() for v in text.split(",")):
        if not piece:
            continue
        try:
            values.append(yaml.safe_load(piece))
        except yaml.YAMLError:
            raise ValueError(f"cannot read {piece!r} in the values / bounds; write numbers or words "
                             f"separated by commas, e.g. 0.0001, 0.01") from None
    if not values:
        raise ValueError("the values / bounds are empty; write them separated by commas, e.g. 0.0001, 0.01")
    if kind == "choice":
        return {"type": "choice", "values": values}
    names = {"normal": ("mu", "sigma"), "lognormal": ("mu", "sigma"), "randint": ("upper",),
             "quniform": ("min_value", "max_value", "q"), "qloguniform": ("min_value", "max_value", "q")}
    return {"type": kind, **dict(zip(names.get(kind, ("min_value", "max_value")), values, strict=False))}
