"""Trained models at work: loading predictors, batch scoring, registered models, export."""
