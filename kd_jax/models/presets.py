"""Teacher/student size choices per model family: each student has ≤ 1/8 of its teacher's
parameters and FLOPs (checked in tests/test_models_presets.py).

Only size fields live here; the dataset fixes the rest (`resolution`, `channels`, `num_classes`),
and a teacher and its student must share `latent_dim` (they see the same z). Measured with
`kd_jax.metrics.cost` at batch 1 (XLA FLOPs per forward pass, a multiply-add = 2):

  family (28 px 1 ch/32 px 3 ch) teacher params, MFLOPs     student params, MFLOPs   student/teacher
  classifier       28      272k,   57               24k,   3.7              0.09 p, 0.06 f
                   32      272k,   76               24k,   5.4              0.09 p, 0.07 f
  dcgan_generator  28      1.98M, 219              207k,   3.9              0.10 p, 0.02 f
                   32      2.60M, 416              156k,   7.2              0.06 p, 0.02 f
  stylegan2_gen.   28      1.72M, 377              108k,  24                0.06 p, 0.06 f
                   32      5.65M, 688              354k,  44                0.06 p, 0.06 f
  conv_autoencoder 28       748k, 272               49k,  18                0.07 p, 0.07 f
                   32       751k, 363               49k,  24                0.07 p, 0.07 f

The DCGAN student is 8× narrower (not 4×) because its first dense layer, latent → start map,
grows only linearly with width and would otherwise keep the parameter ratio above 1/8 at 28 px.
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
