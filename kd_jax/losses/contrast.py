"""Contrastive representation distillation (CRD): the loss, its embedding head and its memory bank.

The memory is a plain dict of arrays that the trainer carries in its state (replicated over the mesh)
and threads through the step; every function here is pure and jit-safe, and sees the whole global
batch, so it works unchanged on batch-sharded arrays. One CRD step, in the reference's order:

    idx = sample_indices(key, positive, num_negatives, num_data)             # [B, K+1]
    s_scores, t_scores, memory = contrast_scores(memory, v_s, v_t, idx)      # first call fixes Z
    loss = crd(s_scores, t_scores, num_data)                                  # [B]
    memory = update_memory(memory, v_s, v_t, positive)                        # after the scores

with v_s = Embed()(student_features) and v_t = Embed()(teacher_features) (two separate heads, both
trained with the adapters) and `positive` the dataset indices of the batch's examples.

Paper: Y. Tian, D. Krishnan, P. Isola, 2020, "Contrastive Representation Distillation" (ICLR).
Follows the authors' code (HobbitLong/RepDistiller, `crd/criterion.py`, `crd/memory.py`). CRD-repo
weight 0.8 (β) alongside CE with weight 1 and no KD term.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import errors
from kd_jax.losses import _utils
from kd_jax.types import Array

Memory = dict[str, Array]

_EPS = 1e-7  # The reference's module-level `eps` in crd/criterion.py.


def check_num_negatives(num_negatives: int, num_data: int, field: str | None = None) -> None:
  """Raises ConfigError unless 1 <= num_negatives < num_data (call it once, when building the run).

  Negatives are rows of a memory that holds one row per training example, so a bank of K >= N
  negatives per anchor cannot be drawn from the other examples without most of it being repeats.
  `field` is only kept for old callers (it prefixes the message); name the config field with
  `kd_jax.config_utils.field_context` instead.
  """
  problem = None
  if num_negatives < 1:
    problem = (f'num_negatives={num_negatives}: CRD needs at least one negative per anchor; use '
               'num_negatives >= 1 (the paper uses 16384).')
  elif num_negatives >= num_data:
    problem = (f'num_negatives={num_negatives} >= the {num_data} training examples: CRD bank larger '
               'than the dataset (negatives are drawn from the memory of one row per training '
               f'example); use at most {num_data - 1} negatives, or train on more data.')
  if problem:
    raise errors.ConfigError(f'{field}: {problem}' if field else problem)


def init_memory(rng: Array, num_data: int, feat_dim: int) -> Memory:
  """The initial CRD memory: two [N, D] banks uniform in [-stdv, stdv], stdv = 1/sqrt(D/3), Z unset.

  As `ContrastMemory.__init__` (`torch.rand(N, D) * 2 stdv - stdv` for `memory_v1`, `memory_v2`).
  'student' is the reference's memory_v1 (momentum average of student embeddings), 'teacher' its
  memory_v2; 'z_student' / 'z_teacher' are Z_v1 / Z_v2, -1 until the first call of `contrast_scores`.
  The rows are not unit-norm at first; each becomes so once its example has been seen.

  Args:
    rng: PRNG key.
    num_data: N, the number of training examples (one memory row each).
    feat_dim: D, the embedding width (`Embed.features`).
  """
  if int(num_data) < 2:
    raise errors.ConfigError(
        f'CRD memory: num_data (the training-set size, one memory row per example) must be >= 2, '
        f'got {num_data}; pass the size of the training split.')
  if int(feat_dim) < 1:
    raise errors.ConfigError(
        f'CRD memory: feat_dim must be >= 1, got {feat_dim}; the paper uses 128.')
  stdv = 1.0 / math.sqrt(feat_dim / 3.0)
  k_s, k_t = jax.random.split(rng)
  shape = (int(num_data), int(feat_dim))
  return {
      'student': jax.random.uniform(k_s, shape, jnp.float32, -stdv, stdv),
      'teacher': jax.random.uniform(k_t, shape, jnp.float32, -stdv, stdv),
      'z_student': jnp.array(-1.0, jnp.float32),
      'z_teacher': jnp.array(-1.0, jnp.float32),
  }


def sample_indices(rng: Array, positive: Array, num_negatives: int, num_data: int) -> Array:
  """Memory rows to contrast each anchor with: [B, K+1] int32, column 0 the positive.

  Columns 1..K are drawn uniformly with replacement from [0, num_data) — the distribution of
  `ContrastMemory`'s alias sampler with uniform unigrams (which may also draw the positive itself).
  Note the reference's CIFAR-100 runs do not use that sampler: their dataset
  (`CIFAR100InstanceSample`, mode 'exact') supplies negatives drawn from examples of *other classes*
  — that is `sample_other_class_indices`, the trainer's default (`config.crd.negatives`).

  Args:
    rng: PRNG key (fold in the step so every step draws anew).
    positive: [B] integer dataset indices of the batch's examples.
    num_negatives: K (static).
    num_data: N, the number of memory rows.
  """
  positive = jnp.asarray(positive)
  if positive.ndim != 1:
    raise errors.ConfigError(
        f'CRD: positive indices must be a [B] vector of dataset indices, got shape {positive.shape}.')
  negatives = jax.random.randint(rng, (positive.shape[0], num_negatives), 0, num_data, jnp.int32)
  return jnp.concatenate([positive.astype(jnp.int32)[:, None], negatives], axis=1)


def class_table(labels: Any) -> dict[str, np.ndarray]:
  """Host-side lookup for `sample_other_class_indices`: the split's labels [N], the record indices
  sorted by class [N], and each class's start and count in that order [C]."""
  labels = np.asarray(labels).astype(np.int32).reshape(-1)
  if labels.size == 0 or labels.min() < 0:
    raise errors.ConfigError('CRD other-class negatives need the non-negative integer labels of the '
                             'training split; draw uniform negatives (sample_indices) for unlabelled '
                             'data.')
  count = np.bincount(labels).astype(np.int32)
  start = (np.cumsum(count) - count).astype(np.int32)
  return {'labels': labels, 'order': np.argsort(labels, kind='stable').astype(np.int32),
          'start': start, 'count': count}


def sample_other_class_indices(rng: Array, positive: Array, table: dict[str, Array],
                               num_negatives: int) -> Array:
  """Like `sample_indices`, but the K negatives of each anchor are examples of *other classes*.

  This is the sampler of the reference's CIFAR-100 runs (`CIFAR100InstanceSample`, mode 'exact':
  `np.random.choice(cls_negative[target], k)`), drawn here with replacement (the reference draws
  without replacement when K is below the number of other-class examples; with K ≪ N the two
  differ by rare repeats). Uniform over the N − n_y other-class records: draw r in [0, N − n_y) and
  skip the block of class y in the class-sorted order.

  Args:
    rng: PRNG key.
    positive: [B] dataset indices of the batch's examples.
    table: `class_table(labels)` (as arrays; a jit constant or replicated input).
    num_negatives: K (static).
  """
  positive = jnp.asarray(positive).astype(jnp.int32)
  y = jnp.asarray(table['labels'])[positive]
  start = jnp.asarray(table['start'])[y][:, None]
  count = jnp.asarray(table['count'])[y][:, None]
  n = jnp.shape(table['order'])[0]
  r = jax.random.randint(rng, (positive.shape[0], num_negatives), 0, n - count, jnp.int32)
  r = jnp.where(r >= start, r + count, r)
  return jnp.concatenate([positive[:, None], jnp.asarray(table['order'])[r]], axis=1)


def _check_contrast_inputs(memory: Memory, student_embed: Array, teacher_embed: Array,
                           indices: Array) -> None:
  n, d = jnp.shape(memory['student'])
  b = jnp.shape(student_embed)[0] if jnp.ndim(student_embed) else None
  if (jnp.shape(student_embed) != (b, d) or jnp.shape(teacher_embed) != (b, d)
      or jnp.shape(memory['teacher']) != (n, d) or jnp.ndim(indices) != 2
      or jnp.shape(indices)[0] != b or jnp.shape(indices)[1] < 2):
    raise errors.ConfigError(
        f'CRD: expects student and teacher embeddings [B, D] with D={d} (the memory width, '
        f'the feat_dim of init_memory) and indices [B, K+1] with K >= 1; got student '
        f'{jnp.shape(student_embed)}, teacher {jnp.shape(teacher_embed)}, indices {jnp.shape(indices)}.')


def contrast_scores(memory: Memory, student_embed: Array, teacher_embed: Array, indices: Array, *,
                    temperature: float = 0.07) -> tuple[Array, Array, Memory]:
  r"""NCE-normalised scores of each anchor against its positive and K negatives from the memory.

  .. math:: \mathrm{student\_scores}_{bk} = \frac{\exp(\langle M^t_{i_{bk}}, v^s_b\rangle/\tau)}{Z_s},
     \quad \mathrm{teacher\_scores}_{bk} = \frac{\exp(\langle M^s_{i_{bk}}, v^t_b\rangle/\tau)}{Z_t}

  As `ContrastMemory.forward`: out_v1 (student anchor, v1 = student embedding) reads the *teacher*
  memory (memory_v2) and out_v2 (teacher anchor) the student memory (memory_v1); memory rows are
  constants (`.detach()` → stop_gradient). Z is the Monte-Carlo partition estimate
  Z = mean_{b,k}(exp(·/τ)) · N, computed once from the first batch (while the stored Z is still -1)
  and fixed afterwards; it is a constant for the gradient (the reference keeps it as a Python float).
  The mean is over the whole (global) batch. The paper's critic has no Z (it is h = e^{·/τ} /
  (e^{·/τ} + K/N)); the code's Z follows Wu et al. 2018's NCE memory bank.

  Args:
    memory: from `init_memory` (or the previous step).
    student_embed: v_s, unit-norm student embeddings [B, D] (`Embed`).
    teacher_embed: v_t, unit-norm teacher embeddings [B, D].
    indices: [B, K+1] memory rows, column 0 the positive (`sample_indices`).
    temperature: τ (reference `nce_t`, 0.07).

  Returns:
    (student_scores [B, K+1], teacher_scores [B, K+1], memory with Z set). The banks are unchanged;
    call `update_memory` after the loss.
  """
  _check_contrast_inputs(memory, student_embed, teacher_embed, indices)
  num_data = jnp.shape(memory['student'])[0]
  bank_s = jax.lax.stop_gradient(_utils.as_float(memory['student']))
  bank_t = jax.lax.stop_gradient(_utils.as_float(memory['teacher']))
  v_s, v_t = _utils.as_float(student_embed), _utils.as_float(teacher_embed)
  exp_s = jnp.exp(jnp.einsum('bkd,bd->bk', bank_t[indices], v_s) / temperature)
  exp_t = jnp.exp(jnp.einsum('bkd,bd->bk', bank_s[indices], v_t) / temperature)

  def fixed_z(stored: Array, scores: Array) -> Array:
    stored = jnp.asarray(stored)
    first = jax.lax.stop_gradient(jnp.mean(scores) * num_data).astype(stored.dtype)
    return jnp.where(stored < 0, first, stored)

  z_s = fixed_z(memory['z_student'], exp_s)
  z_t = fixed_z(memory['z_teacher'], exp_t)
  new_memory = {**memory, 'z_student': z_s, 'z_teacher': z_t}
  return exp_s / z_s, exp_t / z_t, new_memory


def _momentum_rows(bank: Array, positive: Array, embed: Array, momentum: float) -> Array:
  rows = bank[positive] * momentum + jax.lax.stop_gradient(_utils.as_float(embed)) * (1.0 - momentum)
  rows = rows / jnp.sqrt(jnp.sum(rows * rows, axis=1, keepdims=True))
  return bank.at[positive].set(rows.astype(bank.dtype))


def update_memory(memory: Memory, student_embed: Array, teacher_embed: Array, positive: Array, *,
                  momentum: float = 0.5) -> Memory:
  r"""Momentum update of the positives' memory rows: M[y] ← normalise(m·M[y] + (1−m)·v).

  As the `torch.no_grad()` block of `ContrastMemory.forward`: the student bank (memory_v1) takes the
  student embeddings, the teacher bank (memory_v2) the teacher embeddings, rows L2-normalised by
  (Σ x²)^½ without eps, written back with `index_copy_` (here `.at[y].set`). Inputs are constants
  (stop_gradient). Z is left as it is. If `positive` repeats an index within the batch, which of the
  duplicate rows is kept is unspecified (as for CUDA `index_copy_`); batches drawn without replacement
  within an epoch never repeat.

  Args:
    memory: the memory the scores were computed from.
    student_embed: v_s [B, D]; teacher_embed: v_t [B, D].
    positive: [B] dataset indices of the batch's examples.
    momentum: m (reference `nce_m`, 0.5).
  """
  positive = jnp.asarray(positive)
  return {
      **memory,
      'student': _momentum_rows(memory['student'], positive, student_embed, momentum),
      'teacher': _momentum_rows(memory['teacher'], positive, teacher_embed, momentum),
  }


def _contrast_loss(scores: Array, noise: Array, eps: float) -> Array:
  """−(log D1 + Σ_k log D0) per anchor, `ContrastLoss` before its sum over the batch."""
  # log(P/(P + c + eps)) = −log1p((c + eps)/P) and log(c/(x + c + eps)) = −log1p((x + eps)/c): the
  # reference's div-then-log, rewritten so that ratios close to 1 keep their float32 precision.
  positive = jnp.log1p((noise + eps) / scores[:, 0])
  negatives = jnp.sum(jnp.log1p((scores[:, 1:] + eps) / noise[:, None]), axis=1)
  return positive + negatives


def crd(student_scores: Array, teacher_scores: Array, *, num_data: int | float,
        eps: float = _EPS) -> Array:
  r"""Contrastive representation distillation loss (NCE form), per example.

  .. math::
     \ell(b) = \sum_{x \in \{x^s, x^t\}} -\Big[\log\frac{x_{b0}}{x_{b0} + K P_n + \epsilon}
        + \sum_{k=1}^{K} \log\frac{K P_n}{x_{bk} + K P_n + \epsilon}\Big],\quad P_n = \frac1N

  with x^s, x^t the [B, K+1] scores of `contrast_scores` (column 0 the positive, columns 1..K the
  negatives), K the number of negatives and N = num_data the number of training examples.

  Paper: Y. Tian, D. Krishnan, P. Isola, 2020, "Contrastive Representation Distillation" (ICLR), the
  NCE objective (the reference's "Eq (18)") with critic h = x/(x + K/N). Follows the authors' code
  (HobbitLong/RepDistiller `crd/criterion.py`): `ContrastLoss` with Pn = 1/n_data, m = K, eps = 1e-7
  added to the *denominators* only, `loss = −(Σ_b log D1 + Σ_{b,k} log D0) / bsz`, and
  `CRDLoss = ContrastLoss(out_v1) + ContrastLoss(out_v2)`. mean_b ℓ(b) equals `CRDLoss` exactly.
  Per example, ℓ(b) depends on the other examples of the batch only through Z, which the reference
  estimates from the *first* batch and then keeps fixed (see `contrast_scores`). CRD-repo weight 0.8.

  Args:
    student_scores: out_v1 [B, K+1], student anchor vs the teacher memory (role `crd_student_scores`).
    teacher_scores: out_v2 [B, K+1], teacher anchor vs the student memory (role `crd_teacher_scores`).
    num_data: N, the training-set size (a run value: the trainer fills it, see `compose`).
    eps: the reference's 1e-7.

  Example:
    >>> x = jnp.array([[1., 1.]]); crd(x, x, num_data=2)   # K/N = 1/2: 2·(log(1.5) + log(3)) = 3.0082
    Array([3.0081549], dtype=float32)
  """
  s, t = _utils.as_float(student_scores), _utils.as_float(teacher_scores)
  if s.ndim != 2 or s.shape != t.shape or s.shape[1] < 2:
    raise errors.ConfigError(
        f"loss 'crd': expects student and teacher scores of the same shape [B, K+1] with K >= 1 "
        f'(column 0 the positive), got {s.shape} and {t.shape}; feed it the outputs of '
        f'kd_jax.losses.contrast.contrast_scores.')
  n = _utils.as_float(num_data)
  if n.shape != ():
    raise errors.ConfigError(
        f"loss 'crd': num_data must be a scalar (the training-set size), got shape {n.shape}.")
  noise = jnp.broadcast_to((s.shape[1] - 1) / n, (s.shape[0],))  # K · Pn
  return _contrast_loss(s, noise, eps) + _contrast_loss(t, noise, eps)


class Embed(nn.Module):
  """CRD embedding head: flatten [B, ...] → Dense(features) → x / (Σ x²)^½ (float32 output).

  As the reference `Embed` (`nn.Linear` + `Normalize(2)`, no eps: an all-zero projection gives NaN,
  as there). Flax's default Dense init (lecun-normal kernel, zero bias) replaces PyTorch's
  `nn.Linear` default (uniform ±1/sqrt(fan_in) for both). Use one head for the student and one for the
  teacher; both are trainable adapters.
  """
  features: int = 128

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = _utils.flatten(_utils.as_float(x))
    x = nn.Dense(self.features, param_dtype=jnp.float32, name='linear')(x)
    return x / jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
