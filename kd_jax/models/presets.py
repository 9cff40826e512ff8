"""Teacher/student size choices per model family: each student has ≤ 1/8 of its teacher's
parameters and FLOPs (checked in tests/test_models_presets.py).

Only size fields live here; the dataset fixes the rest (`resolution`, `channels`, `num_classes`),
and a teacher and its student must share `latent_dim` (they see the same z). Measured at 32 px,
3 channels, batch 1 (XLA FLOPs, a multiply-add = 2):

  family               teacher params / FLOPs     student params / FLOPs     ratios
  classifier           see the test output; all four pairs are ≤ 0.125 in both.
"""
from __future__ import annotations

import copy
from typing import Any

from kd_jax import errors

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    'classifier': {
        'teacher': {'name': 'resnet20', 'width': 16},
        'student': {'name': 'small_cnn', 'width': 16},
    },
    'dcgan_generator': {
        'teacher': {'name': 'dcgan_generator', 'width': 64, 'latent_dim': 128},
        'student': {'name': 'dcgan_generator', 'width': 8, 'latent_dim': 128},
    },
    'stylegan2_generator': {
        'teacher': {'name': 'stylegan2_generator', 'width': 64, 'w_dim': 256,
                    'mapping_layers': 4, 'latent_dim': 128},
        'student': {'name': 'stylegan2_generator', 'width': 16, 'w_dim': 64,
                    'mapping_layers': 2, 'latent_dim': 128},
    },
    'conv_autoencoder': {
        'teacher': {'name': 'conv_autoencoder', 'width': 64, 'latent_dim': 16},
        'student': {'name': 'conv_autoencoder', 'width': 16, 'latent_dim': 16},
    },
}


def preset(family: str, role: str, **dataset_fields: Any) -> dict[str, Any]:
  """A model config `{'name': ..., **kwargs}` for `role` ('teacher'|'student') of `family`.

  `dataset_fields` (e.g. resolution=28, channels=1, num_classes=10) are merged in.
  """
  if family not in PRESETS:
    raise errors.ConfigError(f'unknown preset family {family!r}; known: {", ".join(PRESETS)}.')
  if role not in ('teacher', 'student'):
    raise errors.ConfigError(f"preset role must be 'teacher' or 'student', got {role!r}.")
  return {**copy.deepcopy(PRESETS[family][role]), **dataset_fields}
