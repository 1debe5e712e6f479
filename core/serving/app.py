"""The scoring server of one endpoint (SPEC §8): FastAPI, run under uvicorn in a process of its own.

``POST /score`` takes raw image bytes (``application/octet-stream``), answered with one SPEC §8 object as
the reference's first-generation services do, or the reference's JSON form, answered with a list, one
object per image. Keys and traffic are read from the database at each
request, so regenerating a key or changing the split takes effect at once; models load once, in the
background, and ``/score`` answers 503 until they have.

All torch work runs on one thread of its own (``_Inference``): requests that arrive while a forward pass
runs are scored together in the next one, and no second OpenMP thread team fights the first for cores.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.base.errors import KestrelError
from core.serving.inputs import Item, Refused, is_raw, read_items
from core.serving.manage import readable_keys
from core.serving.review import Policy, Recorder
from storage.artifacts import BlobStore
from storage.db import make_engine, session_scope
from storage.repos import models
from storage.settings import Settings
from storage.tables import Endpoint, ModelVersion

log = logging.getLogger(__name__)
DEPLOYMENT_HEADER = "azureml-model-deployment"
BATCH_IMAGES = 16  # the most images one forward pass takes when requests are scored together
# Requests parsed and decoded at once. Each holds its images as RGB (3 bytes a pixel, up to 384 MB at the
# default max_request_pixels) while it decodes, so a few threads bound the server's memory; two, so that
# one slow request leaves a thread free for the others.
DECODE_THREADS = 2


@dataclass
class _Limits:
    """A deployment's request_settings: seconds to answer in, requests at once (None: no limit)."""

    timeout_s: float | None = None
    concurrent: int | None = None
    running: int = 0


@dataclass
class _Loaded:
    predictors: dict[str, Any] = field(default_factory=dict)  # deployment name -> Predictor
    limits: dict[str, _Limits] = field(default_factory=dict)
    versions: dict[str, int | None] = field(default_factory=dict)  # deployment name -> model version id
    recorder: Recorder | None = None
    ready: bool = False
    error: str = ""


@dataclass(frozen=True)
class _Current:
    """What the server reads from the database as it runs: keys, traffic and the review queue's settings."""

    keys: tuple[str | None, ...]
    traffic: dict[str, int]
    review: Policy | None


class _Access:
    """The endpoint's keys, traffic and review settings, read again only when the database changed: SQLite's
    ``data_version`` moves whenever another connection commits, so a regenerated key still counts at
    the very next request. Other databases are read at each request. Keys are stored sealed; one that
    cannot be unsealed with this server's secret is None."""

    def __init__(self, engine: Any, name: str, settings: Settings) -> None:
        self.engine, self.name, self.settings = engine, name, settings
        self.probe = engine.raw_connection() if engine.dialect.name == "sqlite" else None
        self.version: int | None = None
        self.value: _Current | None = None

    def get(self) -> _Current:
        version = None
        if self.probe is not None:
            cursor = self.probe.cursor()
            version = cursor.execute("PRAGMA data_version").fetchone()[0]
            cursor.close()
        if self.value is None or version is None or version != self.version:
            with session_scope(self.engine) as session:
                row = _endpoint(session, self.name)
                self.value = _Current(tuple(readable_keys(row, self.settings).values()), dict(row.traffic),
                                      Policy.of(row.review))
            self.version = version
        return self.value


def create_app(endpoint: str, settings: Settings) -> FastAPI:
    engine = make_engine(settings.db_url)
    loaded = _Loaded()
    access = _Access(engine, endpoint, settings)
    inference = _Inference()
    decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")

    def load() -> None:
        from core.inference.predict import load_predictor

        try:
            with session_scope(engine) as session:
                row = _endpoint(session, endpoint)
                deployments = models.deployments(session=session, endpoint_id=row.id)
                versions = {d.name: session.get(ModelVersion, d.model_version_id) for d in deployments}
                loaded.limits = {d.name: _Limits(d.request_timeout_ms / 1000 if d.request_timeout_ms else None,
                                                 d.max_concurrent_requests) for d in deployments}
                loaded.versions = {d.name: d.model_version_id for d in deployments}
                loaded.recorder = Recorder(engine, int(row.id or 0), BlobStore(settings.blobs_dir))
            for name, version in versions.items():
                assert version is not None
                loaded.predictors[name] = load_predictor(Path(version.artifact_dir))
                log.info("deployment %s loaded from %s", name, version.artifact_dir)
            loaded.ready = True
            _set_state(engine, endpoint, "ready")
        except Exception as exc:  # the server stays up and says why it cannot score
            log.exception("loading the deployments of %s failed", endpoint)
            loaded.error = f"{type(exc).__name__}: {exc}"
            _set_state(engine, endpoint, "failed")

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        inference.call(load)
        yield
        decoder.shutdown(wait=False, cancel_futures=True)
        if loaded.recorder is not None:
            loaded.recorder.close()
        engine.dispose()

    app = FastAPI(title=f"Kestrel endpoint {endpoint}", lifespan=lifespan,
                  description="Score images with the models deployed behind this endpoint (SPEC §8).")

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        headers = {"Retry-After": "2"} if exc.status in (429, 503) else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.get("/health")
    def health() -> dict[str, Any]:
        state = "ready" if loaded.ready else "failed" if loaded.error else "loading"
        return {"endpoint": endpoint, "status": state, "deployments": sorted(loaded.predictors), "error": loaded.error}

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        current = access.get()
        _authorize(request.headers.get("authorization", ""), current.keys)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_request_bytes:
            raise Refused(413, f"the request is {int(declared):,} bytes; the limit is {settings.max_request_bytes:,}")
        body = await request.body()
        if len(body) > settings.max_request_bytes:
            raise Refused(413, f"the request is {len(body):,} bytes; the limit is {settings.max_request_bytes:,}")
        if not loaded.ready:
            raise Refused(503, loaded.error or "the model is loading; retry in a few seconds")
        deployment = _pick(request.headers.get(DEPLOYMENT_HEADER), current.traffic, loaded.predictors)
        content_type = request.headers.get("content-type", "")
        limits = loaded.limits.get(deployment) or _Limits()
        if limits.concurrent is not None and limits.running >= limits.concurrent:
            raise Refused(429, f"deployment {deployment} takes {limits.concurrent} request(s) at once "
                               "(request_settings.max_concurrent_requests_per_instance); retry shortly")

        predictor = loaded.predictors[deployment]

        async def answer() -> tuple[list[Item], Any]:
            # Parsing and decoding take up to seconds for large images: off the loop, so other requests go on.
            items = await asyncio.get_running_loop().run_in_executor(decoder, read_items, body, content_type,
                                                                     settings)
            return items, await asyncio.wrap_future(inference.score(predictor, items))

        limits.running += 1
        try:
            items, answers = await asyncio.wait_for(answer(), limits.timeout_s)
        except TimeoutError:
            raise Refused(408, f"deployment {deployment} did not answer within {limits.timeout_s * 1000:.0f} ms "
                               "(request_settings.request_timeout_ms); raise it in the deployment's file — "
                               "explanations take longer") from None
        finally:
            limits.running -= 1
        if loaded.recorder is not None:
            loaded.recorder.record(deployment, loaded.versions.get(deployment), predictor.task,
                                   [item.image for item in items], answers, current.review)
        return JSONResponse(answers[0] if is_raw(content_type) else answers, headers={DEPLOYMENT_HEADER: deployment})

    return app


def _endpoint(session: Any, name: str) -> Endpoint:
    row = models.get_endpoint(session=session, name=name)
    if row is None:
        raise Refused(404, f"endpoint {name} was deleted")
    return row


def _set_state(engine: Any, name: str, state: str) -> None:
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        if row is not None:
            row.state = state
            session.add(row)


def _authorize(header: str, keys: tuple[str | None, ...]) -> None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Refused(401, "missing key: send the header 'Authorization: Bearer <key>'")
    if not any(key is not None for key in keys):
        raise Refused(500, "this endpoint's keys cannot be read with the server's secret (KESTREL_SECRET_KEY or "
                           "KESTREL_HOME/secret.key): `kestrel endpoint keys NAME` says why; when the secret was "
                           "lost or changed, make new keys with `kestrel endpoint regenerate-key NAME`")
    if not any(key and secrets.compare_digest(token.strip(), key) for key in keys):
        raise Refused(401, "wrong key: `kestrel endpoint keys NAME` shows the current keys")


def _pick(asked: str | None, traffic: dict[str, int], predictors: dict[str, Any]) -> str:
    """The deployment named by the header, else one drawn by the traffic percentages."""
    if asked:
        if asked not in predictors:
            raise Refused(404, f"no deployment {asked!r} on this endpoint; deployments: {sorted(predictors)}")
        return asked
    live = {name: share for name, share in traffic.items() if share > 0 and name in predictors}
    if not live:
        raise Refused(503, "no deployment takes traffic; set it with `kestrel endpoint update NAME --traffic DEP=100`")
    draw = random.uniform(0, sum(live.values()))
    for name, share in live.items():
        draw -= share
        if draw <= 0:
            return name
    return next(reversed(live))


@dataclass
class _Work:
    future: Future
    call: Callable[[], Any] | None = None  # anything else that must run on the inference thread
    predictor: Any = None
    items: list[Item] = field(default_factory=list)


class _Inference:
    """The one thread that runs torch in this server. Each thread that calls into torch gets an OpenMP
    team of its own, and on few cores the idle teams' spin-waits slow every forward pass (measured on
    two cores: 43 ms alone, 65 ms once a second team existed). Requests for the same deployment that
    queue up while a pass runs are scored together, up to ``BATCH_IMAGES`` images."""

    def __init__(self) -> None:
        self.waiting: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="inference", daemon=True).start()

    def call(self, fn: Callable[[], Any]) -> Future:
        work = _Work(Future(), call=fn)
        self.waiting.put(work)
        return work.future

    def score(self, predictor: Any, items: list[Item]) -> Future:
        work = _Work(Future(), predictor=predictor, items=items)
        self.waiting.put(work)
        return work.future

    def _serve(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while True:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            # A request past its request_timeout_ms cancelled its future: skip its work. Setting a result on
            # a cancelled future would raise here and end this thread, leaving every later request unanswered.
            batch = [work for work in batch if work.future.set_running_or_notify_cancel()]
            together: dict[int, list[_Work]] = defaultdict(list)
            for work in batch:
                if work.call is None and not any(item.explain for item in work.items):
                    together[id(work.predictor)].append(work)
                else:
                    _settle(work, work.call or (lambda w=work: _answer(w.predictor, w.items)))
            for group in together.values():
                _score_together(group)


def _score_together(group: list[_Work]) -> None:
    chunk: list[_Work] = []
    for work in group:
        if chunk and sum(len(w.items) for w in chunk) + len(work.items) > BATCH_IMAGES:
            _score_chunk(chunk)
            chunk = []
        chunk.append(work)
    if chunk:
        _score_chunk(chunk)


def _score_chunk(chunk: list[_Work]) -> None:
    if len(chunk) == 1:
        _settle(chunk[0], lambda: _answer(chunk[0].predictor, chunk[0].items))
        return
    try:
        answers = _answer(chunk[0].predictor, [item for work in chunk for item in work.items])
    except Exception:  # noqa: BLE001 — scored one by one, each request gets its own answer or error
        for work in chunk:
            _settle(work, lambda w=work: _answer(w.predictor, w.items))
        return
    start = 0
    for work in chunk:
        mine = answers[start:start + len(work.items)]
        for i, answer in enumerate(mine):
            answer["filename"] = f"image_{i}"
        work.future.set_result(mine)
        start += len(work.items)


def _settle(work: _Work, fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 — the request's coroutine raises it
        work.future.set_exception(exc)
    else:
        work.future.set_result(result)


def _answer(predictor: Any, items: list[Item]) -> list[dict[str, Any]]:
    from core.inference.predict import answer_json

    try:
        return answer_json(predictor, [item.image for item in items], [f"image_{i}" for i in range(len(items))],
                           [item.xai if item.explain else None for item in items])
    except KestrelError as exc:  # a bad xai_parameters value
        raise Refused(400, str(exc)) from None
