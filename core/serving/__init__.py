"""HTTP endpoints that score images with deployed models: the app, its runner processes, their management."""
