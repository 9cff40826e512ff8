"""Per-example classification metrics (accuracy, student/teacher agreement), usable inside jit.

They return one value per example so padded eval batches can be masked before the single reduction,
and so sums over batches and devices stay exact (divide by the true count once, at the end).
"""
from __future__ import annotations

import jax.numpy as jnp

from kd_jax.types import Array


def _apply_mask(values: Array, mask: Array | None) -> Array:
  return values if mask is None else values * mask.astype(values.dtype)


def top1_correct(logits: Array, labels: Array, mask: Array | None = None) -> Array:
  """1.0 where `argmax(logits)` equals the integer label, else 0.0.

  Args:
    logits: [B, C] scores.
    labels: [B] integer class ids.
    mask: optional [B] (bool or 0/1); masked-out (padding) examples give 0.

  Returns:
    [B] float32. Accuracy over real examples is `sum(out) / sum(mask)`.
  """
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return _apply_mask(correct, mask)


def agreement(student_logits: Array, teacher_logits: Array, mask: Array | None = None) -> Array:
  """1.0 where student and teacher predict the same class (top-1 fidelity, needs no labels).

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C].
    mask: optional [B]; masked-out examples give 0.

  Returns:
    [B] float32.
  """
  same = (jnp.argmax(student_logits, axis=-1) == jnp.argmax(teacher_logits, axis=-1))
  return _apply_mask(same.astype(jnp.float32), mask)

