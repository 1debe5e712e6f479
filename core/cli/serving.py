"""`kestrel model …`, `kestrel endpoint …`, `kestrel deployment create` and `kestrel score`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from core.base.errors import ConfigError
from core.cli.common import JsonFlag, app, err, open_storage, out, reports_errors, session_scope

model_app = typer.Typer(help="Register trained models and set their inference settings.", no_args_is_help=True)
endpoint_app = typer.Typer(help="HTTP endpoints that score images with deployed models.", no_args_is_help=True)
deployment_app = typer.Typer(help="Models deployed behind an endpoint.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(endpoint_app, name="endpoint")
app.add_typer(deployment_app, name="deployment")



def _emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(data, default=str)) if as_json else out.print(text)


@model_app.command("register")
@reports_errors
def model_register(
    name: Annotated[str, typer.Option(help="Model name; registering again makes the next version.")],
    trial: Annotated[int | None, typer.Option(help="The trial whose model to register.")] = None,
    job: Annotated[int | None, typer.Option(help="Register this job's best child.")] = None,
    path: Annotated[Path | None, typer.Option(help="An MLflow model folder Kestrel exported.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register a trial's model (or a job's best, or an MLflow model folder) as the next version of NAME."""
    from core.inference.models import register

    settings, engine = open_storage()
    info = register(settings=settings, engine=engine, name=_check_name(name), trial_id=trial, job_id=job,
                    path=path)
    origin = f"trial {info['trial_id']}" if info["trial_id"] else str(path)
    _emit(info, as_json, f"registered {info['name']}:{info['version']} ({info['task']}) from {origin}")


@model_app.command("list")
@reports_errors
def model_list(as_json: JsonFlag = False) -> None:
    """Registered models and their versions."""
    from core.inference.models import describe
    from storage.repos import models

    _, engine = open_storage()
    with session_scope(engine) as session:
        rows = [describe(session, v) for _, versions in models.list_models(session=session) for v in versions]
    if as_json:
        print(json.dumps({"models": rows}))
        return
    table = Table("model", "version", "task", "trial", "metrics")
    for r in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in list(r["metrics"].items())[:3] if isinstance(v, float))
        table.add_row(r["name"], str(r["version"]), r["task"], str(r["trial_id"]), metrics)
    out.print(table)


@model_app.command("show")
@reports_errors
def model_show(ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]")], as_json: JsonFlag = False) -> None:
    """One model version: task, metrics, source trial and inference settings."""
    from core.inference.models import describe, resolve

    _, engine = open_storage()
    with session_scope(engine) as session:
        info = describe(session, resolve(session, ref))
    _emit(info, as_json, json.dumps(info, indent=2, default=str))


@model_app.command("settings")
@reports_errors
def model_settings(
    ref: Annotated[str, typer.Argument(metavar="NAME:VERSION")],
    set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="An inference setting, repeatable.")],
    as_json: JsonFlag = False,
) -> None:
    """Change inference settings of a version (SPEC §7), e.g. --set box_score_thresh=0.5."""
    from core.base.params import parse_pairs
    from core.inference.models import update_settings

    _, engine = open_storage()
    info = update_settings(engine=engine, ref=ref, changes=parse_pairs(set_))
    _emit(info, as_json, f"{info['name']}:{info['version']} settings: {json.dumps(info['settings'])}")


@model_app.command("export")
@reports_errors
def model_export(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]")],
    format: Annotated[str, typer.Option("--format", help="onnx, torchscript or mlflow")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the model and its sidecar JSON into.")],
    as_json: JsonFlag = False,
) -> None:
    """Export a model version to ONNX or TorchScript, with a sidecar JSON saying how to feed it, or as an
    MLflow model folder (as Azure's AutoML gives its models)."""
    from core.inference.export import export_model, sidecar_path
    from core.inference.models import describe, resolve

    _, engine = open_storage()
    with session_scope(engine) as session:
        version = resolve(session, ref)
        folder, about = Path(version.artifact_dir), describe(session, version)
    if format == "mlflow":
        from core.inference.mlflow_model import write_mlflow_model

        written = write_mlflow_model(folder, out_dir, metadata_={
            "model": f"{about['name']}:{about['version']}", "task": about["task"], "metrics": about["metrics"]})
        _emit({"model": ref, "format": format, "folder": str(written)}, as_json, f"wrote the MLflow model {written}")
        return
    exported = export_model(folder, format, out_dir)  # type: ignore[arg-type]
    info = {"model": ref, "format": format, "file": str(exported), "sidecar": str(sidecar_path(exported))}
    _emit(info, as_json, f"wrote {exported} and {info['sidecar']}")


@endpoint_app.command("create")
@reports_errors
def endpoint_create(
    name: Annotated[str | None, typer.Argument(help="The endpoint's name (or the file's name:).")] = None,
    file: Annotated[Path | None, typer.Option(help="An endpoint YAML (managed online schema).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an endpoint with two keys and start its server on a free loopback port."""
    from core.serving import runner
    from core.serving.manage import create_endpoint
    from core.serving.manifests import read_endpoint_file

    notices: list[str] = []
    if file is not None:
        manifest = read_endpoint_file(file)
        if name is not None and name != manifest.name:
            raise ConfigError("NAME", f"{name!r} differs from the file's name {manifest.name!r}; give one of them")
        name, notices = manifest.name, manifest.notices
    if name is None:
        raise ConfigError("NAME", "required: the endpoint's name, or --file with a name:")
    _notify(notices)
    settings, engine = open_storage()
    with session_scope(engine) as session:
        create_endpoint(session=session, name=name, settings=settings)
    runner.start(settings, engine, name)
    info = _ready_info(settings, engine, name)
    _emit(info | {"notices": notices}, as_json, f"endpoint {name} serving at {info['scoring_uri']}")


@endpoint_app.command("start")
@reports_errors
def endpoint_start(name: str, as_json: JsonFlag = False) -> None:
    """Start the endpoint's server unless it runs (e.g. after it was killed), and wait until it is ready."""
    from core.serving import runner

    settings, engine = open_storage()
    started = runner.ensure_started(settings, engine, name)
    info = _ready_info(settings, engine, name)
    _emit(info, as_json, f"endpoint {name} {'started' if started else 'was running'}: {info['scoring_uri']}")


@endpoint_app.command("restart")
@reports_errors
def endpoint_restart(name: str, as_json: JsonFlag = False) -> None:
    """Stop the endpoint's server and start it again (it reloads its models), on its port when that is free."""
    from core.serving import runner

    settings, engine = open_storage()
    runner.start(settings, engine, name)
    info = _ready_info(settings, engine, name)
    _emit(info, as_json, f"endpoint {name} restarted: {info['scoring_uri']}")


@endpoint_app.command("list")
@reports_errors
def endpoint_list(as_json: JsonFlag = False) -> None:
    """Endpoints with their URL, state, deployments and traffic."""
    from storage.repos import models

    _, engine = open_storage()
    with session_scope(engine) as session:
        rows = [_endpoint_info(session, e.name) for e in models.list_endpoints(session=session)]
    if as_json:
        print(json.dumps({"endpoints": rows}))
        return
    table = Table("endpoint", "state", "scoring uri", "deployments", "traffic")
    for r in rows:
        table.add_row(r["name"], r["state"], r["scoring_uri"], ", ".join(f"{d['name']} ({d['model']})"
                      for d in r["deployments"]), ", ".join(f"{k}={v}" for k, v in r["traffic"].items()))
    out.print(table)


@endpoint_app.command("show")
@reports_errors
def endpoint_show(name: str, as_json: JsonFlag = False) -> None:
    """An endpoint: scoring_uri, state, deployments and traffic."""
    from core.serving import runner

    settings, engine = open_storage()
    with session_scope(engine) as session:
        info = _endpoint_info(session, name)
    tail = runner.log_tail(settings, name) if info["state"] == runner.DOWN else []
    _emit(info, as_json, json.dumps(info, indent=2) + "".join(f"\nlog: {line}" for line in tail))


@endpoint_app.command("keys")
@reports_errors
def endpoint_keys(name: str, as_json: JsonFlag = False) -> None:
    """The endpoint's primary and secondary keys (send one as 'Authorization: Bearer <key>')."""
    from core.serving.manage import keys as endpoint_keys

    settings, engine = open_storage()
    with session_scope(engine) as session:
        keys = endpoint_keys(session, name, settings)
    _emit(keys, as_json, f"primary:   {keys['primary_key']}\nsecondary: {keys['secondary_key']}")


@endpoint_app.command("regenerate-key")
@reports_errors
def endpoint_regenerate_key(
    name: str,
    key_type: Annotated[str, typer.Option("--key-type", help="primary or secondary")] = "primary",
    as_json: JsonFlag = False,
) -> None:
    """Replace one key; the old one stops working at once."""
    from core.serving.manage import KEY_TYPES, regenerate_key

    if key_type not in KEY_TYPES:  # refused before the database is opened
        raise ConfigError("--key-type", f"{key_type!r} is not a key", KEY_TYPES)
    settings, engine = open_storage()
    with session_scope(engine) as session:
        keys = regenerate_key(session=session, name=name, key_type=key_type, settings=settings)
    _emit(keys, as_json, f"new {key_type} key: {keys[key_type + '_key']}")


@endpoint_app.command("update")
@reports_errors
def endpoint_update(
    name: str,
    traffic: Annotated[str, typer.Option(help="Percentages per deployment, e.g. blue=70,green=30 (sum ≤ 100).")],
    as_json: JsonFlag = False,
) -> None:
    """Split traffic across deployments; it takes effect at the next request."""
    from core.serving.manage import check_traffic, parse_traffic, set_traffic

    split = check_traffic(parse_traffic(traffic))
    _, engine = open_storage()
    with session_scope(engine) as session:
        set_traffic(session=session, name=name, split=split)
        info = _endpoint_info(session, name)
    _emit(info, as_json, f"endpoint {name} traffic: {traffic}")


@endpoint_app.command("delete")
@reports_errors
def endpoint_delete(name: str, as_json: JsonFlag = False) -> None:
    """Stop the endpoint's server and delete it with its deployments (models stay registered)."""
    from core.serving import runner
    from core.serving.manage import delete_rows

    _, engine = open_storage()
    runner.stop(engine, name)
    with session_scope(engine) as session:
        delete_rows(session=session, name=name)
    _emit({"name": name, "deleted": True}, as_json, f"endpoint {name} deleted")


@endpoint_app.command("serve", hidden=True)
@reports_errors
def endpoint_serve(name: str, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the endpoint's server in this process (the runner starts one such process per endpoint)."""
    import uvicorn

    from core.serving.app import create_app

    settings, _ = open_storage()
    uvicorn.run(create_app(name, settings), host=host, port=port, log_level="warning")


@deployment_app.command("create")
@reports_errors
def deployment_create(
    endpoint: Annotated[str | None, typer.Option(help="The endpoint to deploy to (or the file's endpoint_name:).")]
    = None,
    name: Annotated[str | None, typer.Option(help="The deployment's name, e.g. blue (or the file's name:).")] = None,
    model: Annotated[str | None, typer.Option(metavar="NAME:VERSION",
                                              help="A registered model version, or NAME@latest.")] = None,
    file: Annotated[Path | None, typer.Option(help="A deployment YAML (managed online schema).")] = None,
    traffic: Annotated[int | None, typer.Option(help="Percent of the endpoint's traffic for this deployment (a "
                                                     "canary); the others keep the rest in their proportions.")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a model version behind an endpoint (the first deployment takes all traffic, a later one none
    unless --traffic gives it a share)."""
    from core.serving import runner
    from core.serving.manage import add_deployment
    from core.serving.manifests import DeploymentFile, read_deployment_file

    manifest = read_deployment_file(file) if file is not None else DeploymentFile("", "", "")
    endpoint, name, model = endpoint or manifest.endpoint, name or manifest.name, model or manifest.model
    for flag, value in (("--endpoint", endpoint), ("--name", name), ("--model", model)):
        if not value:
            raise ConfigError(flag, "required (or give --file with it)")
    assert endpoint and name and model
    _notify(manifest.notices)
    settings, engine = open_storage()
    with session_scope(engine) as session:
        add_deployment(session=session, endpoint=endpoint, name=name, model=model,
                       request_timeout_ms=manifest.request_timeout_ms,
                       max_concurrent_requests=manifest.max_concurrent_requests, share=traffic)
    runner.start(settings, engine, endpoint)  # the server loads its models once, at start
    info = _ready_info(settings, engine, endpoint)
    _emit(info | {"notices": manifest.notices}, as_json, f"deployed {model} as {name} on {endpoint}: "
          f"{info['scoring_uri']}")


def _ready_info(settings: Any, engine: Any, name: str) -> dict[str, Any]:
    """What `endpoint show` prints, once the endpoint's server has loaded its models."""
    from core.serving import runner

    runner.wait_ready(settings, engine, name)
    with session_scope(engine) as session:
        return _endpoint_info(session, name)


def _notify(notices: list[str]) -> None:
    for notice in notices:
        err.print(f"[cyan]notice:[/cyan] {notice}")


@app.command("score")
@reports_errors
def score_command(
    source: Annotated[str, typer.Argument(metavar="PATH", help="Image folder, labelled file/folder, or NAME:VERSION.")],
    model: Annotated[str, typer.Option(metavar="NAME[:VERSION]", help="A registered model version.")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the answers (JSONL).")],
    as_json: JsonFlag = False,
) -> None:
    """Score many images with a registered model; labelled data also gets the task's metrics report."""
    from core.base.tasks import Task
    from core.inference.models import resolve
    from core.inference.predict import load_predictor
    from core.inference.score import read_source, score

    settings, engine = open_storage()
    with session_scope(engine) as session:
        version = resolve(session, model)
        task, folder = Task(version.settings["task"]), Path(version.artifact_dir)
    predictor = load_predictor(folder)
    report = score(predictor, read_source(source, task, settings, engine), out_file,
                   None if as_json else lambda done, total: err.print(f"scored {done} of {total}", end="\r"))
    report.pop("evaluation", None)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in list(report.get("metrics", {}).items())[:4])
    _emit(report, as_json, f"\nwrote {report['images']} answers to {out_file}" + (f"; {metrics}" if metrics else ""))


def _check_name(name: str) -> str:
    from core.serving.manage import check_name

    return check_name(name, "--name")


def _endpoint_info(session: Any, name: str) -> dict[str, Any]:
    from core.serving.manage import endpoint_info

    return endpoint_info(session, name)
