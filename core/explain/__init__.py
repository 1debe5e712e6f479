"""Explanations of predictions: pixel attributions and their pictures for classification (SPEC §9), Grad-CAM
heat maps for detections. Kept empty so that importing the torch-free ``core.explain.params`` stays light."""
