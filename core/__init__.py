"""Kestrel's engine: data formats, tasks, model zoo, training, metrics, sweeps, serving."""
