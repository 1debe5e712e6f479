"""What a person does next with a finished trial, on its page: train it again to see that it reproduces,
or train it N more epochs; and, on the page of such a trial, how it relates to the one it came from."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.sweep import rerun
from storage.db import session_scope
from storage.tables import Trial
from ui import common as _ui


def reproduce_or_extend(trial: Trial) -> None:
    st.subheader("Reproduce or train on")
    if not trial.metrics.get("manifest"):
        st.caption("This trial ran before Kestrel kept a manifest of its data, parameters and software, so it "
                   "can be neither re-run exactly nor extended.")
        return
    left, right = st.columns(2)
    with left:
        st.caption("Trains the trial again with the same data version, every parameter and the same seed, as a "
                   "job of its own; its page then compares the two results.")
        if st.button("Re-run this trial", key="trial_rerun", icon=":material/replay:"):
            _ui.queue_job("the re-run", lambda: rerun.submit_rerun(trial_id=trial.id, settings=_ui.settings(),
                                                            engine=_ui.engine()))
    with right:
        _extend(trial)


def _extend(trial: Trial) -> None:
    """Go on training from the trial's last epoch, with its optimizer's state, as a new linked trial."""
    if why := rerun.why_not_extendable(trial):
        st.caption(f"Cannot be trained on: {why}.")
        return
    done = int(trial.metrics["resume"]["epoch"])
    st.caption(f"Goes on from epoch {done} with the optimizer's state and the learning-rate schedule planned "
               "for the longer run, as a new trial; its curves continue these.")
    more = st.number_input("More epochs", min_value=1, max_value=rerun.MAX_EXTRA_EPOCHS, value=max(1, done),
                           step=1, key="trial_extend_epochs")
    epochs = f"{more} more epoch{'' if more == 1 else 's'}"
    if st.button(f"Train {epochs}", key="trial_extend", icon=":material/fast_forward:"):
        _ui.queue_job(epochs, lambda: rerun.submit_extension(
            trial_id=trial.id, epochs=int(more), settings=_ui.settings(), engine=_ui.engine()))


def continued(trial: Trial) -> dict[str, Any] | None:
    """On an extension's page: which trial it goes on from, and after which epoch (None for others)."""
    extends = (trial.metrics.get("manifest") or {}).get("extends")
    if not extends:
        return None
    st.info(f"Goes on from trial {extends['trial']} after its epoch {extends['epoch']}: the curves up to the "
            "dotted line are that trial's.", icon=":material/fast_forward:")
    st.page_link("pages/trial.py", label=f"Open trial {extends['trial']}", icon=":material/query_stats:",
                 query_params={"trial": str(extends["trial"])})
    return extends


def compared(trial: Trial) -> None:
    """On a re-run's page: its primary metric against the original's, and what differed."""
    if trial.job_id is None:
        return
    with session_scope(_ui.engine()) as session:
        said = rerun.comparison(session=session, job_id=trial.job_id)
    if not said or said.get("delta") is None:
        return
    text = (f"Re-run of trial {said['original_trial']}: {said['metric']} {said['rerun']:.4f} against "
            f"{said['original']:.4f}, a difference of {said['delta']:+.4f}")
    if said["reproduced"]:
        st.success(f"{text}: reproduced (within ±{said['tolerance']}).", icon=":material/verified:")
    else:
        st.warning(f"{text}: more than ±{said['tolerance']}.", icon=":material/difference:")
    st.page_link("pages/trial.py", label=f"Open trial {said['original_trial']}", icon=":material/query_stats:",
                 query_params={"trial": str(said["original_trial"])})
    if said["differences"]:
        with st.expander("What differed between the two runs"):
            st.code("\n".join(said["differences"]))
