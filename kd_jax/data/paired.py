"""Fixed, deterministic targets of paired image-to-image tasks: the image a model should output for a
clean image (itself, its edge map, a stylisation). Images NHWC float in [-1, 1], channels independent.

With u = (x + 1) / 2 in [0, 1], replicate ('edge') padding at the border, ⋆ a 3×3 cross-correlation:

  identity   x (the same array: autoencoders and restoration)
  edges      2·clip(|∇u| / 4, 0, 1) − 1, |∇u| = sqrt((u ⋆ Sx)² + (u ⋆ Sxᵀ)²), Sx the Sobel kernel
             [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]: a full 0→1 step scores 1, flat regions −1
  stylize    2·s(clip(u ⋆ E, 0, 1)) − 1, E = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]] (emboss: flat areas
             keep their value, edges facing the lower right brighten, the upper left darken) and
             s(t) = 3t² − 2t³ (smoothstep tone curve: contrast up in the mid-tones)
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from kd_jax import errors
from kd_jax.types import Array

KINDS = ('identity', 'edges', 'stylize')
SOBEL_X = np.array([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]], np.float32)
EMBOSS = np.array([[-2., -1., 0.], [-1., 1., 1.], [0., 1., 2.]], np.float32)
EDGE_SCALE = 4.0


def check_kind(kind: str, field: str = 'config.target.kind') -> None:
  """ConfigError naming `field` and the choices when `kind` is not one of `KINDS`."""
  if kind not in KINDS:
    raise errors.ConfigError(f'{field}={kind!r} is not a paired target; use one of {KINDS} '
                             "('identity': the clean image, as autoencoders and restoration do).")


def _correlate3(u: Array, kernel: np.ndarray) -> Array:
  """3×3 cross-correlation of every channel of `u` [B, H, W, C], replicate padding, same size."""
  h, w = u.shape[1:3]
  p = jnp.pad(u, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  # Nine shifted views weighted by the kernel: exact, and cheaper than a conv at 3×3 on one channel.
  return sum(float(kernel[i, j]) * p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)
             if kernel[i, j])


def edges(images: Array) -> Array:
  """Sobel gradient magnitude of `images`, rescaled to [-1, 1] (formula in the module docstring)."""
  u = (images + 1.0) / 2.0
  gx, gy = _correlate3(u, SOBEL_X), _correlate3(u, SOBEL_X.T)
  return 2.0 * jnp.clip(jnp.sqrt(gx * gx + gy * gy) / EDGE_SCALE, 0.0, 1.0) - 1.0


def stylize(images: Array) -> Array:
  """Emboss relief with a smoothstep tone curve, in [-1, 1] (formula in the module docstring)."""
  t = jnp.clip(_correlate3((images + 1.0) / 2.0, EMBOSS), 0.0, 1.0)
  return 2.0 * (t * t * (3.0 - 2.0 * t)) - 1.0


def transform(images: Array, kind: str) -> Array:
  """The target of `kind` for clean `images`; 'identity' returns `images` itself."""
  check_kind(kind)
  if kind == 'identity':
    return images
  return (edges if kind == 'edges' else stylize)(images)
