"""Logit-based distillation losses: Hinton KD, cross-entropy, reverse KL, JS, logit MSE, DKD and DIST.

Every function takes student logits first and the teacher's (or labels) second, returns a per-example
array of shape [B] and leaves the batch mean to the train step. Logits are [B, C]; the elementwise
losses (kd, ce, hard_ce, reverse_kl, js, logit_mse) also accept [B, ..., C] and then average the
extra axes per example.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from kd_jax import errors
from kd_jax.losses import _utils
from kd_jax.types import Array


def _per_example(x: Array) -> Array:
  return x if x.ndim == 1 else _utils.mean_per_example(x)


def _require_logits(loss: str, student: Array, teacher: Array, *, ndim2: bool = False) -> None:
  if ndim2 and jnp.ndim(student) != 2:
    raise errors.ConfigError(
        f"loss '{loss}': expects logits of shape [batch, classes], got {jnp.shape(student)}; "
        f'feed it classifier logits.')
  _utils.require_same_shape(loss, student, teacher)


def kd(student_logits: Array, teacher_logits: Array, *, temperature: float = 4.0) -> Array:
  r"""Hinton knowledge distillation: T² · KL(softmax(t/T) ‖ softmax(s/T)), per example.

  .. math:: \ell(b) = T^2 \sum_c p^T_{t,c} (\log p^T_{t,c} - \log p^T_{s,c}),\quad
     p^T = \mathrm{softmax}(z / T)

  Paper: G. Hinton, O. Vinyals, J. Dean, 2015, "Distilling the Knowledge in a Neural Network".
  The T² factor keeps the gradient magnitude independent of T (paper §2). Reference normalisation
  (mdistiller `kd_loss`): KL summed over classes, averaged over the batch, times T²; default T=4
  (mdistiller's CIFAR-100 setting). Hinton's α-mixing with the hard-label loss is two composed terms:
  `[('kd', α), ('ce', 1 - α)]`.

  The same function distils a generator through a frozen classifier: feed it the classifier's logits on
  student images and on teacher images (map the roles with `inputs=` in the composition).

  Example:
    >>> s = jnp.array([[1., 2., 3.]]); kd(s, s)   # identical logits
    Array([0.], dtype=float32)
  """
  _require_logits('kd', student_logits, teacher_logits)
  log_p_s = _utils.log_softmax_t(student_logits, temperature)
  log_p_t = _utils.log_softmax_t(teacher_logits, temperature)
  kl = optax.losses.kl_divergence_with_log_targets(log_p_s, log_p_t)
  return _per_example(temperature**2 * kl)


def ce(student_logits: Array, labels: Array, *, label_smoothing: float = 0.0) -> Array:
  r"""Cross-entropy of student logits against integer labels, per example.

  .. math:: \ell(b) = -\sum_c y_c \log \mathrm{softmax}(s)_c,\quad
     y = (1-\epsilon)\,\mathrm{onehot}(label) + \epsilon / C

  The standard supervised loss (the hard-label term of Hinton et al. 2015). With `label_smoothing=0`
  it is `optax.losses.softmax_cross_entropy_with_integer_labels`; otherwise labels are smoothed with
  `optax.smooth_labels` (Szegedy et al. 2016, "Rethinking the Inception Architecture").

  Example:
    >>> ce(jnp.array([[0., 0.]]), jnp.array([1]))   # log 2
    Array([0.6931472], dtype=float32)
  """
  logits = _utils.as_float(student_logits)
  labels = jnp.asarray(labels)
  if jnp.shape(labels) != jnp.shape(logits)[:-1]:
    raise errors.ConfigError(
        f"loss 'ce': labels shape {jnp.shape(labels)} must equal logits shape without the class axis "
        f'{jnp.shape(logits)[:-1]}; feed integer class ids, not one-hot vectors.')
  if label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype),
                                  label_smoothing)
    loss = optax.losses.softmax_cross_entropy(logits, targets)
  else:
    loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  return _per_example(loss)


def hard_ce(student_logits: Array, teacher_logits: Array) -> Array:
  r"""Cross-entropy of student logits against the teacher's argmax (hard pseudo-labels), per example.

  .. math:: \ell(b) = -\log \mathrm{softmax}(s)_{\arg\max_c t_c}

  The T→0 limit of KD; the usual pseudo-labelling loss (e.g. Xie et al. 2020, "Self-training with
  Noisy Student"). No gradient flows to the teacher (argmax is piecewise constant).

  Example:
    >>> hard_ce(jnp.array([[0., 0.]]), jnp.array([[1., 5.]]))   # pseudo-label 1: log 2
    Array([0.6931472], dtype=float32)
  """
  _require_logits('hard_ce', student_logits, teacher_logits)
  pseudo = jnp.argmax(teacher_logits, axis=-1)
  return _per_example(optax.losses.softmax_cross_entropy_with_integer_labels(
      _utils.as_float(student_logits), pseudo))


def reverse_kl(student_logits: Array, teacher_logits: Array, *, temperature: float = 4.0) -> Array:
  r"""Reverse (mode-seeking) KL: T² · KL(softmax(s/T) ‖ softmax(t/T)), per example.

  .. math:: \ell(b) = T^2 \sum_c p^T_{s,c} (\log p^T_{s,c} - \log p^T_{t,c})

  The reverse direction of Hinton KD: the student is pushed to put mass only where the teacher does
  (used e.g. by Gu et al. 2024, "MiniLLM: Knowledge Distillation of Large Language Models"). Same T²
  scaling and T=4 default as `kd` so the two are comparable.

  Example:
    >>> s = jnp.array([[1., 2., 3.]]); reverse_kl(s, s)
    Array([0.], dtype=float32)
  """
  _require_logits('reverse_kl', student_logits, teacher_logits)
  log_p_s = _utils.log_softmax_t(student_logits, temperature)
  log_p_t = _utils.log_softmax_t(teacher_logits, temperature)
  kl = optax.losses.kl_divergence_with_log_targets(log_p_t, log_p_s)
  return _per_example(temperature**2 * kl)


def js(student_logits: Array, teacher_logits: Array, *, temperature: float = 4.0) -> Array:
  r"""Jensen–Shannon divergence between tempered softmaxes, times T², per example.

  .. math:: \ell(b) = T^2 \left[\tfrac12 KL(p^T_t \| m) + \tfrac12 KL(p^T_s \| m)\right],\quad
     m = \tfrac12 (p^T_s + p^T_t)

  Symmetric and bounded by T²·log 2 (natural log). JS is the divergence behind the original GAN
  objective (Goodfellow et al. 2014) and a common symmetric KD alternative; T² keeps it on the same
  scale as `kd`. log m is computed as logaddexp(log p_s, log p_t) − log 2 for stability.

  Example:
    >>> s = jnp.array([[1., 2., 3.]]); js(s, s)
    Array([0.], dtype=float32)
  """
  _require_logits('js', student_logits, teacher_logits)
  log_p_s = _utils.log_softmax_t(student_logits, temperature)
  log_p_t = _utils.log_softmax_t(teacher_logits, temperature)
  log_m = jnp.logaddexp(log_p_s, log_p_t) - math.log(2.0)
  kl = optax.losses.kl_divergence_with_log_targets
  return _per_example(temperature**2 * 0.5 * (kl(log_m, log_p_t) + kl(log_m, log_p_s)))


def logit_mse(student_logits: Array, teacher_logits: Array) -> Array:
  r"""Mean squared error between student and teacher logits, per example.

  .. math:: \ell(b) = \frac1C \sum_c (s_c - t_c)^2

  Paper: J. Ba, R. Caruana, 2014, "Do Deep Nets Really Need to be Deep?" (logit regression). The paper
  writes ½‖s − t‖² summed over classes; we average over classes (as `F.mse_loss` in most
  re-implementations), i.e. paper value = (C/2) × this — fold that into the term weight if needed.

  Example:
    >>> logit_mse(jnp.array([[1., 3.]]), jnp.array([[0., 0.]]))
    Array([5.], dtype=float32)
  """
  _require_logits('logit_mse', student_logits, teacher_logits)
  diff = _utils.as_float(student_logits) - _utils.as_float(teacher_logits)
  return _utils.mean_per_example(diff * diff)


def dkd(student_logits: Array, teacher_logits: Array, labels: Array, *, alpha: float = 1.0,
        beta: float = 8.0, temperature: float = 4.0) -> Array:
  r"""Decoupled KD: α·TCKD + β·NCKD, per example.

  .. math::
     TCKD(b) = T^2\, KL\big([p_t^{gt}, 1-p_t^{gt}] \,\|\, [p_s^{gt}, 1-p_s^{gt}]\big)\\
     NCKD(b) = T^2\, KL(\hat p_t \| \hat p_s),\quad \hat p = \mathrm{softmax}(z/T)
     \text{ over the non-target classes}

  Paper: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, 2022, "Decoupled Knowledge Distillation" (CVPR).
  Follows mdistiller's `dkd_loss`: KLs summed over classes, averaged over the batch, times T²; the
  target class is removed from NCKD by subtracting 1000 from its tempered logit; defaults α=1, β=8,
  T=4 (CIFAR-100). mdistiller also ramps the DKD term in linearly over 20 epochs
  (`min(epoch / 20, 1)`): express that as the term weight, e.g. `{'schedule': 'linear_schedule',
  'init_value': 0., 'end_value': 1., 'transition_steps': 20 * steps_per_epoch}`, plus a separate
  `('ce', 1.0)` term. Binary log-probabilities are computed with logsumexp (mdistiller takes log of
  summed probabilities), which is equal in value and stays finite when p_gt → 1.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C].
    labels: [B] integer ground-truth classes.

  Example:
    >>> s = jnp.array([[1., 2., 3.]]); dkd(s, s, jnp.array([2]))
    Array([0.], dtype=float32)
  """
  _require_logits('dkd', student_logits, teacher_logits, ndim2=True)
  _utils.require_same_batch('dkd', student_logits, labels)
  num_classes = jnp.shape(student_logits)[-1]
  gt = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)

  def binary_log_probs(logits: Array) -> Array:
    log_p = _utils.log_softmax_t(logits, temperature)
    log_gt = jnp.sum(jnp.where(gt, log_p, 0.0), axis=-1)
    log_other = jax.nn.logsumexp(jnp.where(gt, -jnp.inf, log_p), axis=-1)
    return jnp.stack([log_gt, log_other], axis=-1)

  def non_target_log_probs(logits: Array) -> Array:
    return jax.nn.log_softmax(_utils.as_float(logits) / temperature - 1000.0 * gt, axis=-1)

  kl = optax.losses.kl_divergence_with_log_targets
  tckd = kl(binary_log_probs(student_logits), binary_log_probs(teacher_logits))
  nckd = kl(non_target_log_probs(student_logits), non_target_log_probs(teacher_logits))
  return temperature**2 * (alpha * tckd + beta * nckd)


def _pearson(a: Array, b: Array, axis: int, eps: float = 1e-8) -> Array:
  """Pearson correlation along `axis`: cosine of the centred vectors, with DIST's eps in the denominator."""
  a = a - jnp.mean(a, axis=axis, keepdims=True)
  b = b - jnp.mean(b, axis=axis, keepdims=True)
  denom = _utils.norm(a, axis) * _utils.norm(b, axis) + eps
  return jnp.sum(a * b, axis=axis) / jnp.squeeze(denom, axis)


def dist(student_logits: Array, teacher_logits: Array, *, beta: float = 1.0, gamma: float = 1.0,
         temperature: float = 1.0) -> Array:
  r"""DIST: inter-class + intra-class Pearson relations of tempered softmaxes (batch-level).

  .. math::
     inter(b) = 1 - \rho(y_s[b,:], y_t[b,:]),\quad
     intra = \frac1C \sum_c \big(1 - \rho(y_s[:,c], y_t[:,c])\big)\\
     \ell(b) = \tau^2 \big(\beta\, inter(b) + \gamma\, intra\big),\quad y = \mathrm{softmax}(z/\tau)

  Paper: T. Huang, S. You, F. Wang, C. Qian, C. Xu, 2022, "Knowledge Distillation from A Stronger
  Teacher" (NeurIPS). Follows their `DIST` module: ρ is the cosine of mean-centred vectors with eps=1e-8
  added to the product of norms; defaults β=γ=1, τ=1. The intra-class term is a batch statistic: it is
  broadcast to every example, so mean_b ℓ(b) equals the paper's batch loss (the inter-class term
  decomposes per example exactly).

  Example:
    >>> s = jnp.array([[1., 2., 3.], [3., 1., 0.]]); jnp.round(dist(s, s), 5)   # eps: ~1e-7
    Array([0., 0.], dtype=float32)
  """
  _require_logits('dist', student_logits, teacher_logits, ndim2=True)
  y_s = jnp.exp(_utils.log_softmax_t(student_logits, temperature))
  y_t = jnp.exp(_utils.log_softmax_t(teacher_logits, temperature))
  inter = 1.0 - _pearson(y_s, y_t, axis=1)
  intra = jnp.mean(1.0 - _pearson(y_s, y_t, axis=0))
  return temperature**2 * (beta * inter + gamma * intra)
