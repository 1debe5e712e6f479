"""The Endpoints page: each endpoint's scoring URL, live state and health, keys (masked until shown, copy,
regenerate), deployments with their traffic split, learning from its requests (each deployment's confidence,
the review queue, retrain: `ui.endpoint_learning`), snippets that call it, start, restart and delete.

``?endpoint=NAME`` selects the endpoint shown, so a reload or a link from the Models page lands on it. The
table follows each server's state from the database and asks its ``/health``; no model runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from core.base.errors import KestrelError
from core.serving import manage, runner
from storage.db import session_scope
from storage.repos import models as repo
from storage.settings import Settings
from ui import common as _ui
from ui import endpoint_learning

HEALTH_TIMEOUT_S = 0.5  # a hung server must not stall the page's refresh
# Symbols every system font has (emoji render as boxes where no emoji font is installed).
STATE_ICON = {"ready": "●", "starting": "◌", "creating": "◌", "failed": "✗", "stopped": "■", "down": "○"}


def _health(uri: str, state: str) -> str:
    if state == runner.DOWN:
        return "server not running"
    if not uri or state == runner.STOPPED:
        return "—"
    try:
        answer = httpx.get(uri.replace("/score", "/health"), timeout=HEALTH_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError):
        return "no answer"
    return f"failed: {answer.get('error')}" if answer.get("status") == "failed" else str(answer.get("status"))


@st.fragment(run_every="2s")
def endpoint_states() -> None:
    """Redrawn every two seconds: each endpoint's state from the database and its live /health."""
    with session_scope(_ui.engine()) as session:
        infos = [manage.endpoint_info(session, e.name) for e in repo.list_endpoints(session=session)]
    if not infos:
        st.info("No endpoints yet. Open a registered model version on the Models page and press Deploy.")
        st.page_link("pages/models.py", label="Go to Models", icon=":material/deployed_code:")
        return
    rows = [{"Endpoint": i["name"], "State": f"{STATE_ICON.get(i['state'], '')} {i['state']}",
             "Health": _health(i["scoring_uri"], i["state"]), "Scoring URL": i["scoring_uri"] or "—",
             "Deployments": ", ".join(f"{d['name']} ({d['model']})" for d in i["deployments"]),
             "Traffic": ", ".join(f"{k} {v}%" for k, v in i["traffic"].items())} for i in infos]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="endpoints_table")


def _keys(name: str) -> str:
    """The key rows (masked until shown) with their regenerate buttons; returns the primary key ("" when it
    cannot be read)."""
    show = st.toggle("Show keys", key="endpoints_show_keys")
    settings = _ui.settings()
    for kind in manage.KEY_TYPES:
        label, button = st.columns([5, 1], vertical_alignment="bottom")
        # The button is drawn first so a regenerated key is the one shown in this same run.
        if button.button("Regenerate", key=f"endpoints_regenerate_{kind}", help=f"Replace the {kind} key",
                         width="stretch"):
            try:
                with session_scope(_ui.engine()) as session:
                    manage.regenerate_key(session=session, name=name, key_type=kind, settings=settings)
            except KestrelError as exc:  # e.g. the secret file is readable by others
                st.error(f"Not regenerated — {_ui.say(exc)}")
            else:
                st.toast(f"New {kind} key for {name}: the old one stops working at the next request.")
        with label:
            st.caption(f"{kind.capitalize()} key")
            _key_text(name, kind, show)
    with session_scope(_ui.engine()) as session:
        return manage.readable_keys(manage.get_endpoint(session, name), settings)["primary_key"] or ""


def _key_text(name: str, kind: str, show: bool) -> None:
    try:
        with session_scope(_ui.engine()) as session:
            key = manage.unseal_key(manage.get_endpoint(session, name), kind, _ui.settings())
    except KestrelError as exc:  # sealed with a secret that was lost or changed
        st.error(_ui.say(exc))
        return
    if show:
        st.code(key, language=None)  # st.code has a copy button
    else:
        st.text(f"{key[:4]}{'•' * 24}")


def _traffic_form(name: str, info: dict[str, Any]) -> None:
    deployments = info["deployments"]
    if not deployments:
        return
    with st.form(f"endpoints_traffic_{name}"):
        st.markdown("**Traffic** (percent of requests without a deployment header; at most 100 in all)")
        columns = st.columns(min(4, len(deployments)))
        split = {}
        for i, d in enumerate(deployments):
            split[d["name"]] = int(columns[i % len(columns)].number_input(
                f"{d['name']} ({d['model']})", min_value=0, max_value=100, step=5,
                value=int(info["traffic"].get(d["name"], 0)), key=f"endpoints_traffic_{name}_{d['name']}"))
        saved = st.form_submit_button("Save traffic", key="endpoints_traffic_save")
    if saved:
        try:
            with session_scope(_ui.engine()) as session:
                manage.set_traffic(session=session, name=name, split=split)
        except KestrelError as exc:
            st.error(f"Traffic not changed — {_ui.say(exc)}.")
        else:
            st.success("Traffic saved; it applies from the next request.")


def snippets(uri: str, key: str) -> tuple[str, str]:
    """curl and Python ``requests`` code that scores ``image.jpg`` at ``uri`` with ``key``, ready to paste."""
    curl = (f'curl -X POST "{uri}" \\\n  -H "Authorization: Bearer {key}" \\\n'
            f'  -H "Content-Type: application/octet-stream" \\\n  --data-binary @image.jpg')
    python = f'''import base64

import requests

with open("image.jpg", "rb") as file:
    image = base64.b64encode(file.read()).decode()
answer = requests.post(
    "{uri}",
    headers={{"Authorization": "Bearer {key}"}},
    json={{"input_data": {{"columns": ["image"], "data": [image]}}}},
    timeout=60,
)
answer.raise_for_status()
print(answer.json())
'''
    return curl, python


def _endpoint_view(name: str) -> None:
    with session_scope(_ui.engine()) as session:
        info = manage.endpoint_info(session, name)
    st.subheader(f"Endpoint {name}")
    if info["scoring_uri"]:
        st.markdown(f"Scoring URL `{info['scoring_uri']}` · [API docs]({info['openapi_uri']})")
    if info["deployments"]:
        st.page_link("pages/score.py", label=f"Send {name} test images", icon=":material/image_search:",
                     query_params={"endpoint": name})
    primary_key = _keys(name)
    _traffic_form(name, info)
    endpoint_learning.panel(name, info)
    if info["scoring_uri"]:
        with st.expander("Call it from code (the snippets contain the primary key)"):
            curl, python = snippets(info["scoring_uri"], primary_key)
            st.code(curl, language="bash")
            st.code(python, language="python")
    if info["state"] == runner.DOWN:
        st.warning(f"Endpoint {name} is down: its server is not running. Press Start.")
    start, restart, right = st.columns(3)
    if start.button("Start", key="endpoints_start", disabled=info["state"] not in (runner.DOWN, runner.STOPPED),
                    help="Starts the server when it is not running, e.g. after it was killed."):
        _start(name, runner.ensure_started, "Not started", "starting")
    if restart.button("Restart", key="endpoints_restart", help="Reloads the models, e.g. after changing settings."):
        _start(name, runner.start, "Not restarted", "restarting")
    sure = right.checkbox("Yes, delete this endpoint", key="endpoints_delete_sure")
    if right.button("Delete endpoint", key="endpoints_delete", disabled=not sure):
        runner.stop(_ui.engine(), name)
        with session_scope(_ui.engine()) as session:
            manage.delete_rows(session=session, name=name)
        st.query_params.pop("endpoint", None)
        st.session_state.pop("endpoints_endpoint", None)
        st.rerun()


def _start(name: str, start: Callable[[Settings, Engine, str], object], failed: str, doing: str) -> None:
    try:
        start(_ui.settings(), _ui.engine(), name)
    except KestrelError as exc:  # e.g. a deployed model's files are gone
        st.error(f"{failed} — {_ui.say(exc)}")
    else:
        st.toast(f"{name} {doing}; its state is in the table above.")


st.title("Endpoints")
endpoint_states()
with session_scope(_ui.engine()) as _session:
    _endpoint_names = [e.name for e in repo.list_endpoints(session=_session)]
if _endpoint_names:
    _endpoint_view(_ui.url_selectbox("Endpoint", _endpoint_names, key="endpoints_endpoint", param="endpoint"))
