"""Trainers: one module per kind of run, all on the shared loop in `loop.py`.

`get(name)` returns the trainer's `train_and_evaluate(config, workdir)`; imports are lazy so that a
classification run never imports generator code and vice versa.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from kd_jax import errors

_TRAINERS = {
    'classification': 'kd_jax.trainers.classification',
    'gan': 'kd_jax.trainers.gan',
    'generator_distill': 'kd_jax.trainers.generator_distill',
    'autoencoder': 'kd_jax.trainers.autoencoder',
    'diffusion': 'kd_jax.trainers.diffusion',
    'progressive_distill': 'kd_jax.trainers.progressive',
}


def names() -> list[str]:
  return sorted(_TRAINERS)


def get(name: str) -> Callable[[Any, str], dict[str, Any]]:
  if name not in _TRAINERS:
    raise errors.ConfigError(f"unknown trainer {name!r} in config.trainer; known: {', '.join(names())}.")
  return importlib.import_module(_TRAINERS[name]).train_and_evaluate
