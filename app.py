"""Kestrel's studio: the Streamlit entry point (`streamlit run app.py`).

Builds the shared engine once, declares the pages in workflow order and runs the chosen one.
The UI process never imports torch; training and scoring happen in the worker.
"""

from __future__ import annotations

import streamlit as st

from storage.db import session_scope
from storage.repos import workers
from ui import common as _ui

st.set_page_config(page_title="Kestrel", page_icon=":material/flutter_dash:", layout="wide")

# Migrating here, before any page runs, puts a broken database in front of the user at once.
_ui.engine()


def _start() -> None:
    """The bare address opens the Datasets page, query parameters and all. Streamlit serves its default page
    only at "/" and answers its own name with "Page not found", so Datasets is an ordinary page with a URL of
    its own and the default page only sends people there."""
    st.switch_page("pages/datasets.py", query_params=st.query_params.to_dict())


# Each url_path is its file's name: until st.navigation first runs, Streamlit routes a URL to pages/NAME.py
# by that name (see ui/common.py), and the two must agree for a deep link to land on the same page.
PAGES = [
    st.Page(_start, title="Kestrel", url_path="start", default=True, visibility="hidden"),
    st.Page("pages/datasets.py", title="Datasets", icon=":material/photo_library:", url_path="datasets"),
    st.Page("pages/labelling.py", title="Labelling", icon=":material/label:", url_path="labelling"),
    st.Page("pages/weights.py", title="Weights", icon=":material/download:", url_path="weights"),
    st.Page("pages/wizard.py", title="New job", icon=":material/add_circle:", url_path="wizard"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/model_training:", url_path="jobs"),
    # Reached from a job's leaderboard or a shared ?trial= link, so it stays out of the menu.
    st.Page("pages/trial.py", title="Trial", icon=":material/query_stats:", url_path="trial", visibility="hidden"),
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:", url_path="models"),
    st.Page("pages/endpoints.py", title="Endpoints", icon=":material/api:", url_path="endpoints"),
    st.Page("pages/score.py", title="Test-score", icon=":material/image_search:", url_path="score"),
]

# The menu is drawn here rather than by st.navigation: until st.navigation first runs in a server, Streamlit's
# own menu would list every file of pages/ by its file name (config: client.showSidebarNavigation = false).
MENU = ("datasets", "labelling", "weights", "wizard", "jobs", "models", "endpoints", "score")
page = st.navigation(PAGES, position="hidden")
with st.sidebar:
    for listed in PAGES:
        if listed.url_path in MENU:
            st.page_link(listed, label=listed.title, icon=listed.icon)
    with session_scope(_ui.engine()) as session:
        live = workers.live(session=session, grace_s=30)
    for line in _ui.lane_lines(live):
        st.caption(line)
    st.caption(f"Device: {_ui.device_of(live)}")
page.run()
