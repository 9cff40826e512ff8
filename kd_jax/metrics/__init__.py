"""Evaluation metrics: classification accuracy/agreement, image quality, and model cost.

Each submodule stands alone (arrays in, numbers out): it knows nothing of models, losses or
trainers.
"""
