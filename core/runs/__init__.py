"""One trial from start to stored result: `trial.run_trial`, its storage-backed context, and why a trial stops."""
