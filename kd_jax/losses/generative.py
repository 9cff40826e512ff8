"""Generator-distillation losses: pixel L1/L2, LPIPS-style feature distance, feature MSE, GAN losses,
tempered sigmoid KL on discriminator logits and relational KL.

The student generator G_s and the teacher G_t see the same latent z; the trainer builds the outputs
dict (`student_images`, `teacher_images`, discriminator logits, features of a frozen network) and
every function here returns a per-example array [B].

To distil through a frozen *classifier* instead of the discriminator, use `kd` (logit.py) on the
classifier's logits of student and teacher images: map its roles with
`inputs={'student_logits': <key of classifier logits on G_s(z)>, 'teacher_logits': <... on G_t(z)>}`.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd_jax import errors
from kd_jax.losses import _utils
from kd_jax.types import Array


def l1(student_images: Array, teacher_images: Array) -> Array:
  r"""Mean absolute error between student and teacher images, per example.

  .. math:: \ell(b) = \frac{1}{D} \sum_i |G_s(z_b)_i - G_t(z_b)_i|

  The pixel reconstruction term of output-level generator distillation (e.g. Aguinaldo et al. 2019,
  "Compressing GANs using Knowledge Distillation"; Li et al. 2020, "GAN Compression"). Any shape [B, ...].

  Example:
    >>> l1(jnp.ones([1, 2, 2, 3]), jnp.zeros([1, 2, 2, 3]))
    Array([1.], dtype=float32)
  """
  _utils.require_same_shape('l1', student_images, teacher_images)
  return _utils.mean_per_example(jnp.abs(_utils.as_float(student_images) - _utils.as_float(teacher_images)))


def l2(student_images: Array, teacher_images: Array) -> Array:
  r"""Mean squared error between student and teacher images, per example.

  .. math:: \ell(b) = \frac{1}{D} \sum_i (G_s(z_b)_i - G_t(z_b)_i)^2

  Pixel-level generator distillation (Aguinaldo et al. 2019, "Compressing GANs using Knowledge
  Distillation"). Any shape [B, ...]. The same computation as `feature_mse` and `feature.fitnet` (one
  implementation, `_utils.mean_squared_error`), named for its role: a loss on output images.

  Example:
    >>> l2(2. * jnp.ones([1, 4]), jnp.zeros([1, 4]))
    Array([4.], dtype=float32)
  """
  return _utils.mean_squared_error('l2', student_images, teacher_images)


def _as_layers(loss: str, features: Array | Sequence[Array]) -> list[Array]:
  if isinstance(features, (list, tuple)):
    return list(features)
  if isinstance(features, dict):
    raise errors.ConfigError(
        f"loss '{loss}': expects a list of feature maps, got a dict; pass the layers as a list "
        f'in a fixed order for both student and teacher.')
  return [features]


def lpips(student_features: Array | Sequence[Array],
          teacher_features: Array | Sequence[Array], *, eps: float = 1e-10) -> Array:
  r"""LPIPS-style perceptual distance without learned weights, per example.

  .. math:: \ell(b) = \sum_l \frac{1}{H_l W_l} \sum_{h,w} \sum_c
     \big(\hat f^l_s - \hat f^l_t\big)^2_{b,h,w,c},\quad
     \hat f = \frac{f}{\|f\|_{2,\text{channels}} + \epsilon}

  Paper: R. Zhang, P. Isola, A. A. Efros, E. Shechtman, O. Wang, 2018, "The Unreasonable Effectiveness
  of Deep Features as a Perceptual Metric" (CVPR). This is their `lpips=False` baseline variant (all
  linear weights 1): channel-unit-normalised features (eps=1e-10 added to the norm, as in their
  `normalize_tensor`), squared difference, sum over channels, spatial mean, sum over layers. The
  features come from a frozen network (e.g. VGG/AlexNet) applied by the trainer to both image sets.

  Args:
    student_features: list of [B, H_l, W_l, C_l] maps (or one array) computed on the student images.
    teacher_features: the same layers computed on the teacher images.

  Example:
    >>> f = [jnp.ones([1, 2, 2, 3]), jnp.ones([1, 1, 1, 4])]; lpips(f, f)
    Array([0.], dtype=float32)
  """
  s_layers = _as_layers('lpips', student_features)
  t_layers = _as_layers('lpips', teacher_features)
  if len(s_layers) != len(t_layers):
    raise errors.ConfigError(
        f"loss 'lpips': got {len(s_layers)} student and {len(t_layers)} teacher feature maps; compute "
        f'the same layers of the same frozen network for both image sets.')
  total = 0.0
  for s, t in zip(s_layers, t_layers):
    _utils.require_same_shape('lpips', s, t)
    s, t = _utils.as_float(s), _utils.as_float(t)
    s = s / (_utils.norm(s) + eps)
    t = t / (_utils.norm(t) + eps)
    per_position = jnp.sum((s - t) ** 2, axis=-1)
    total = total + _utils.mean_per_example(per_position)
  return total


def feature_mse(student_features: Array, teacher_features: Array) -> Array:
  r"""Mean squared error between (adapted) student and teacher intermediate features, per example.

  .. math:: \ell(b) = \frac{1}{D} \| r(s_b) - t_b \|^2

  The intermediate-feature term of generator distillation (e.g. Li et al. 2020, "GAN Compression";
  Chen et al. 2020, "Distilling Portable Generative Adversarial Networks for Image Translation"): the
  same computation as `feature.fitnet` and `l2` (one implementation, `_utils.mean_squared_error`),
  registered under its own name so generator configs read naturally and shape errors name it. r is
  the trainer's adapter (often a 1×1 conv).

  Example:
    >>> feature_mse(jnp.ones([1, 2, 2, 3]), jnp.zeros([1, 2, 2, 3]))
    Array([1.], dtype=float32)
  """
  return _utils.mean_squared_error('feature_mse', student_features, teacher_features)


def _per_example_logits(x: Array) -> Array:
  """Discriminator logits [B], [B, 1] or patch maps [B, H, W, 1] -> [B, N]."""
  x = _utils.as_float(x)
  return x.reshape(x.shape[0], -1)


def gan_ns_g(fake_logits: Array) -> Array:
  r"""Non-saturating generator loss on the discriminator's logits of student samples, per example.

  .. math:: \ell(b) = \mathrm{softplus}(-D(G_s(z_b))) = -\log \sigma(D(G_s(z_b)))

  Paper: I. Goodfellow et al., 2014, "Generative Adversarial Nets" (NeurIPS), the −log D(G(z))
  variant. Patch discriminators ([B, H, W, 1]) are averaged over positions per example.

  Example:
    >>> gan_ns_g(jnp.zeros([2, 1]))   # log 2
    Array([0.6931472, 0.6931472], dtype=float32)
  """
  return jnp.mean(jax.nn.softplus(-_per_example_logits(fake_logits)), axis=-1)


def gan_ns_d(real_logits: Array, fake_logits: Array) -> Array:
  r"""Discriminator loss of the non-saturating GAN, per example.

  .. math:: \ell(b) = \mathrm{softplus}(-D(x_b)) + \mathrm{softplus}(D(G(z_b)))

  Paper: I. Goodfellow et al., 2014, "Generative Adversarial Nets" (NeurIPS): binary cross-entropy
  with real → 1, fake → 0. Real and fake batches must have the same size; patch logits are averaged
  over positions per example. The R1 penalty needs gradients of D and is the trainer's job.

  Example:
    >>> gan_ns_d(jnp.zeros([1]), jnp.zeros([1]))   # 2 log 2
    Array([1.3862944], dtype=float32)
  """
  _utils.require_same_batch('gan_ns_d', real_logits, fake_logits)
  real = jnp.mean(jax.nn.softplus(-_per_example_logits(real_logits)), axis=-1)
  fake = jnp.mean(jax.nn.softplus(_per_example_logits(fake_logits)), axis=-1)
  return real + fake


def tempered_sigmoid_kl(fake_logits: Array, teacher_fake_logits: Array, *,
                        temperature: float = 1.0) -> Array:
  r"""T² · KL(Bernoulli(σ(d_t/T)) ‖ Bernoulli(σ(d_s/T))) on discriminator logits, per example.

  .. math:: \ell(b) = T^2 \big[p \log\tfrac{p}{q} + (1-p)\log\tfrac{1-p}{1-q}\big],\quad
     p = \sigma(d_t / T),\ q = \sigma(d_s / T)

  d_s = D(G_s(z)) and d_t = D(G_t(z)) for the same z: the student should look exactly as real (to a
  frozen or co-trained discriminator) as the teacher's sample does. It is Hinton's tempered KD applied
  to the discriminator's two-class (real/fake) output, hence the T² factor (Hinton et al. 2015); T=1
  by default (our choice: there is no reference value). Computed as
  BCE(d_s/T; p) − BCE(d_t/T; p) with `optax.losses.sigmoid_binary_cross_entropy`. Patch logits are
  averaged over positions.

  Example:
    >>> d = jnp.array([[1.5]]); tempered_sigmoid_kl(d, d)
    Array([0.], dtype=float32)
  """
  _utils.require_same_shape('tempered_sigmoid_kl', fake_logits, teacher_fake_logits)
  d_s = _per_example_logits(fake_logits) / temperature
  d_t = _per_example_logits(teacher_fake_logits) / temperature
  p = jax.nn.sigmoid(d_t)
  bce = optax.losses.sigmoid_binary_cross_entropy
  return temperature**2 * jnp.mean(bce(d_s, p) - bce(d_t, p), axis=-1)


def _similarity_logits(x: Array, temperature: float, exclude_self: bool) -> Array:
  f = _utils.l2_normalize(_utils.flatten(_utils.as_float(x)), axis=-1)
  sim = f @ f.T / temperature
  if not exclude_self:
    return sim
  b = sim.shape[0]
  rows, cols = np.nonzero(~np.eye(b, dtype=bool))  # static indices of the off-diagonal entries
  return sim[rows, cols].reshape(b, b - 1)


def relation_kl(student_features: Array, teacher_features: Array, *, temperature: float = 0.1,
                exclude_self: bool = True) -> Array:
  r"""KL between teacher and student batch-similarity distributions (batch-relational), per row.

  .. math:: P_{bj} = \mathrm{softmax}_j\big(\cos(f_b, f_j) / \tau\big),\quad
     \ell(b) = KL(P^t_{b,:} \,\|\, P^s_{b,:})

  Relational distillation in the style of SEED (Fang et al. 2021, "SEED: Self-supervised Distillation
  for Visual Representation") and CompRess (Abbasi Koohpayegani et al. 2020), here with the batch itself
  as the anchor set. Features are flattened and L2-normalised (eps 1e-12). By default each example's
  similarity to itself is left out (`exclude_self=True`): it is 1/τ for both networks and would
  otherwise dominate every row. τ=0.1 is our default. mean_b ℓ(b) is the batch-mean KL. Feature
  sizes may differ; with B=1 and exclude_self the loss is 0.

  Example:
    >>> x = jnp.array([[1., 0.], [1., 1.], [0., 1.]]); relation_kl(x, 2. * x)
    Array([0., 0., 0.], dtype=float32)
  """
  _utils.require_same_batch('relation_kl', student_features, teacher_features)
  log_p_s = jax.nn.log_softmax(_similarity_logits(student_features, temperature, exclude_self), axis=-1)
  log_p_t = jax.nn.log_softmax(_similarity_logits(teacher_features, temperature, exclude_self), axis=-1)
  return optax.losses.kl_divergence_with_log_targets(log_p_s, log_p_t)
