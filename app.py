"""Kestrel's studio: the Streamlit entry point (`streamlit run app.py`).

Builds the shared engine once, declares the pages in workflow order and runs the chosen one.
The UI process never imports torch; training and scoring happen in the worker.
"""

from __future__ import annotations

from pathlib import Path

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
MENU = [  # the sidebar's menu, in the order of the workflow: (file, title, icon)
    ("pages/datasets.py", "Datasets", ":material/photo_library:"),
    ("pages/labelling.py", "Labelling", ":material/label:"),
    ("pages/weights.py", "Weights", ":material/download:"),
    ("pages/wizard.py", "New job", ":material/add_circle:"),
    ("pages/jobs.py", "Jobs", ":material/model_training:"),
    ("pages/models.py", "Models", ":material/deployed_code:"),
    ("pages/endpoints.py", "Endpoints", ":material/api:"),
    ("pages/score.py", "Test-score", ":material/image_search:"),
]
PAGES = [
    st.Page(_start, title="Kestrel", url_path="start", default=True, visibility="hidden"),
    *(st.Page(file, title=title, icon=icon, url_path=Path(file).stem) for file, title, icon in MENU),
    # Reached from a job's leaderboard or a shared ?trial= link, so it stays out of the menu.
    st.Page("pages/trial.py", title="Trial", icon=":material/query_stats:", url_path="trial", visibility="hidden"),
]

# The menu is drawn here rather than by st.navigation: until st.navigation first runs in a server, Streamlit's
# own menu would list every file of pages/ by its file name (config: client.showSidebarNavigation = false).
page = st.navigation(PAGES, position="hidden")
with st.sidebar:
    for file, title, icon in MENU:
        st.page_link(file, label=title, icon=icon)
    with session_scope(_ui.engine()) as session:
        live = workers.live(session=session, grace_s=30)
    for line in _ui.lane_lines(live):
        st.caption(line)
    st.caption(f"Device: {_ui.device_of(live)}")
page.run()
