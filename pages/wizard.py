"""The job wizard: data → task and metric → training mode → limits and early termination → review.

Each step edits one part of a job file (the reference's CLI v2 YAML, the same file `kestrel job
submit` takes) kept in Session State; each "Next" checks the file so far with the job parser and
shows a mistake on the step that made it. The job's estimated time on this machine is shown under the
step bar on every step. Review names the job, shows the YAML, offers it for download and submits it
through the CLI (which checks the model names with the model libraries this process never loads).
A job YAML can be uploaded to start pre-filled. The steps live in `ui.wizard_steps` and `ui.wizard_mode`.
"""

from __future__ import annotations

import logging

import streamlit as st

from ui import trial_time as _trial_time
from ui import wizard_job as _job
from ui import wizard_steps as _steps
from ui.wizard_mode import mode_step

log = logging.getLogger(__name__)
STEP_PAGES = [_steps.data_step, _steps.metric_step, mode_step, _steps.limits_step, _steps.review_step]

st.title("New job")
_steps.prefill()
step = st.session_state.setdefault("wizard_step", 0)
st.markdown(_job.step_bar(step))
st.progress((step + 1) / len(_job.STEPS), text=f"Step {step + 1} of {len(_job.STEPS)}: {_job.STEPS[step]}")
estimate_slot = st.empty()  # filled once the step has drawn, so it shows this run's choices
doc = _job.job()
problems: list[str] = []  # mistakes the step's widgets found in this run; "Next" refuses while any
try:
    STEP_PAGES[step](doc, problems)
except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a job file this step cannot read
    log.exception("wizard step %s", _job.STEPS[step])
    problems.append(f"The job file has a field this step cannot read ({type(exc).__name__}: {exc}). "
                    "Fix it in the YAML and load it again, or go back and choose again.")
    st.error(problems[-1])
estimate_slot.caption(_trial_time.estimate_line(doc, _trial_time.Here.read(doc)))
back, forward = st.columns(2)
if step > 0 and back.button("Back"):
    st.session_state["wizard_step"] = step - 1
    st.rerun()
if step < len(_job.STEPS) - 1 and forward.button("Next", type="primary"):
    problem = "; ".join(problems) or _job.check(doc, step)
    if problem:
        st.error(problem)
    else:
        st.session_state["wizard_step"] = step + 1
        st.rerun()
