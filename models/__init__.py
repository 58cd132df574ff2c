"""SALIENT models: pure torch/MONAI. No Ray, no MLflow, no files."""
