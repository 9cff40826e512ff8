"""Small numerical helpers shared by the loss modules (not public API)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.types import Array


def as_float(x: Array) -> Array:
  """Upcasts to at least float32.

  Softmaxes, norms and logs of bfloat16 activations lose too much precision for a loss, so every loss
  computes in float32 (or float64 when x64 is enabled and the input is float64).
  """
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def mean_per_example(x: Array) -> Array:
  """Mean over every axis but the leading (batch) one: [B, ...] -> [B]."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def flatten(x: Array) -> Array:
  """[B, ...] -> [B, D] (a view of all non-batch axes as one feature vector)."""
  return x.reshape(x.shape[0], -1)


def norm(x: Array, axis: int = -1) -> Array:
  """Euclidean norm along `axis` (kept), with a zero (not NaN) gradient at the zero vector.

  `jnp.linalg.norm` has a NaN gradient at 0, which happens for real: e.g. the i==j difference
  vectors in RKD's angle term, or an all-zero ReLU feature row.
  """
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """x / max(||x||, eps) along `axis`: the value of PyTorch's `F.normalize`, used by most references."""
  return x / jnp.maximum(norm(x, axis), eps)


def log_softmax_t(logits: Array, temperature: float) -> Array:
  """log softmax(logits / T) over the last axis, in float32."""
  return jax.nn.log_softmax(as_float(logits) / temperature, axis=-1)


def require_same_batch(loss: str, *arrays: Array) -> None:
  """Raises ConfigError when the inputs of a loss disagree on the leading (batch) axis."""
  sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in arrays}
  if len(sizes) != 1 or None in sizes:
    shapes = ', '.join(str(jnp.shape(a)) for a in arrays)
    raise errors.ConfigError(
        f"loss '{loss}': inputs must share the leading batch axis, got shapes {shapes}; "
        f'feed it student and teacher outputs of the same batch.')


def require_same_shape(loss: str, student: Array, teacher: Array) -> None:
  """Raises ConfigError when student and teacher arrays of an elementwise loss differ in shape."""
  if jnp.shape(student) != jnp.shape(teacher):
    raise errors.ConfigError(
        f"loss '{loss}': student shape {jnp.shape(student)} != teacher shape {jnp.shape(teacher)}; "
        "read the student through a learned adapter, inputs={'student_features': "
        "'adapted/<student path>:<teacher path>'}, or pick layers of matching shape.")
