"""Small numerical helpers shared by the loss modules (not public API)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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
        'pass arrays of one shape: map the student through a learned adapter (a projection to the '
        "teacher's shape) or pick student and teacher layers of matching shape.")


def mean_squared_error(loss: str, student: Array, teacher: Array) -> Array:
  """Mean over non-batch axes of (student − teacher)², in float32: [B, ...] -> [B].

  The one implementation behind `fitnet`, `feature_mse` and `l2`; `loss` names the caller in the
  shape error.
  """
  require_same_shape(loss, student, teacher)
  diff = as_float(student) - as_float(teacher)
  return mean_per_example(diff * diff)


def _adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] averaging weights of PyTorch's adaptive pooling along one axis.

  Bin i covers [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out)), so with a non-integer ratio
  neighbouring bins overlap by one element (and with n_out > n_in elements repeat).
  """
  m = np.zeros([n_out, n_in], np.float32)
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)  # ceil with integers: exact for any size
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: Array, size: tuple[int, int]) -> Array:
  """PyTorch's `F.adaptive_avg_pool2d` for channels-last maps: [B, H, W, C] -> [B, h, w, C].

  Output bin (i, j) is the mean of rows floor(i·H/h) .. ceil((i+1)·H/h) − 1 and the same for columns,
  exactly PyTorch's bins, including non-integer ratios. An integer ratio is a reshape-mean over
  (H/h)×(W/w) blocks; otherwise the pooling is two small constant averaging matrices, applied at
  full float32 precision (the default TPU/GPU matmul precision would round to bfloat16/TF32).
  """
  x = as_float(x)
  if x.ndim != 4:
    raise errors.ConfigError(
        f'adaptive_avg_pool: expects a feature map [B, H, W, C], got shape {x.shape}.')
  b, height, width, c = x.shape
  h, w = (int(n) for n in size)
  if h < 1 or w < 1:
    raise errors.ConfigError(f'adaptive_avg_pool: output size must be positive, got {(h, w)}.')
  if (h, w) == (height, width):
    return x
  if height % h == 0 and width % w == 0:
    return jnp.mean(x.reshape(b, h, height // h, w, width // w, c), axis=(2, 4))
  rows = _adaptive_pool_matrix(height, h)
  cols = _adaptive_pool_matrix(width, w)
  return jnp.einsum('ih,bhwc,jw->bijc', rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def pool_to_common_size(loss: str, student: Array, teacher: Array) -> tuple[Array, Array]:
  """Adaptive-average-pools feature maps [B, H, W, C] to their common (smallest) spatial size.

  Each spatial axis is pooled down to the smaller of the two maps' sizes; maps of equal spatial size
  are returned untouched (so the loss is bit-for-bit what it was without pooling). Channels may
  differ. Raises ConfigError unless both are [B, H, W, C] with one batch size (or any equal-size
  maps of rank >= 3).
  """
  s, t = jnp.shape(student), jnp.shape(teacher)
  if len(s) >= 3 and len(s) == len(t) and s[:-1] == t[:-1]:
    return student, teacher
  if len(s) != 4 or len(t) != 4 or s[0] != t[0]:
    raise errors.ConfigError(
        f"loss '{loss}': expects student and teacher feature maps [B, H, W, C] with the same batch "
        f'size, got student {s} and teacher {t}; pass channels-last maps of the same batch (their '
        f'spatial sizes may differ: the larger is adaptive-average-pooled to the smaller).')
  size = (min(s[1], t[1]), min(s[2], t[2]))
  return adaptive_avg_pool(student, size), adaptive_avg_pool(teacher, size)
