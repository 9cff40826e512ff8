"""Tests for the per-example distillation losses in kd_jax.losses.

Golden values come from independent float64 NumPy re-implementations written below. Each one follows
the *reference code* of its paper literally (loops, probability sums, `torch.mean` over whole matrices,
the same eps placements), not our vectorised JAX code, so a wrong axis, a missing T², a wrong eps or
a per-row decomposition whose mean is not the reference batch loss all show up as a mismatch.
Inputs are small fixed arrays stored in tests/data/loss_inputs.npz (made from a NumPy seed by
`_generate_inputs`).
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kd_jax import errors
from kd_jax import losses
from kd_jax.losses import _utils, feature

B = 4
RTOL, ATOL = 1e-5, 1e-6


def _rng(seed: int = 0) -> np.random.Generator:
  return np.random.default_rng(seed)


def _generate_inputs() -> dict[str, np.ndarray]:
  """How tests/data/loss_inputs.npz was made (run `write_inputs()` to regenerate; never at test time)."""
  r = _rng(0)
  f32 = lambda *shape, scale=1.0: (scale * r.standard_normal(shape)).astype(np.float32)
  return {
      's_logits': f32(B, 5, scale=2.0), 't_logits': f32(B, 5, scale=2.0),
      'labels': r.integers(0, 5, size=B).astype(np.int32),
      # Maps with equal spatial size but different channel counts (AT / NST allow that).
      's_map': f32(B, 3, 3, 6), 't_map': f32(B, 3, 3, 8),
      's_map_same': f32(B, 3, 3, 6),
      # Flat embeddings of different widths (relational losses allow that).
      's_emb': f32(B, 6), 't_emb': f32(B, 10),
      's_img': f32(B, 4, 4, 3), 't_img': f32(B, 4, 4, 3),
      'raw_var': f32(6),
      'd_fake': f32(B, 2, 2, 1, scale=2.0), 'd_teacher': f32(B, 2, 2, 1, scale=2.0),
      'd_real': f32(B, 1, scale=2.0),
      # Added later (drawn after the arrays above, so those are unchanged): larger maps for the
      # spatial pooling of AT / NST / VID (5→3 is a non-integer ratio, 6→3 an integer one) and a
      # student embedding as wide as t_emb (cc_repdistiller needs equal shapes).
      's_map_big': f32(B, 5, 5, 6), 't_map_big': f32(B, 6, 6, 8),
      's_emb_wide': f32(B, 10),
  }


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'loss_inputs.npz')


def write_inputs(path: str = DATA) -> None:
  np.savez(path, **_generate_inputs())


def _inputs() -> dict[str, np.ndarray]:
  """The fixed inputs every golden test reads, stored in tests/data/loss_inputs.npz."""
  with np.load(DATA) as stored:
    return {k: stored[k] for k in stored.files}


X = _inputs()


# ----------------------------------------------------------------------------------------------
# Independent NumPy references (float64).
# ----------------------------------------------------------------------------------------------

def np_softmax(z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """x·log(y) with 0·log(0) = 0, as torch's kl_div."""
  return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """KL(p‖q) summed over the last axis."""
  return np.sum(np_xlogy(p, p) - np_xlogy(p, q), axis=-1)


def np_kd(s, t, T=4.0):
  return T * T * np_kl(np_softmax(t / T), np_softmax(s / T))


def np_ce(s, labels):
  p = np_softmax(s)
  return -np.log(p[np.arange(len(labels)), labels])


def np_js(s, t, T=4.0):
  p, q = np_softmax(s / T), np_softmax(t / T)
  m = 0.5 * (p + q)
  return T * T * 0.5 * (np_kl(q, m) + np_kl(p, m))


def np_dkd_batch(s, t, labels, alpha=1.0, beta=8.0, T=4.0):
  """mdistiller's dkd_loss: binary (target / rest) KL + KL over non-target classes, batch mean."""
  n, c = s.shape
  gt = np.zeros((n, c)); gt[np.arange(n), labels] = 1.0
  other = 1.0 - gt
  ps, pt = np_softmax(s / T), np_softmax(t / T)
  bs = np.stack([(ps * gt).sum(1), (ps * other).sum(1)], 1)
  bt = np.stack([(pt * gt).sum(1), (pt * other).sum(1)], 1)
  tckd = np.sum(np_xlogy(bt, bt) - bt * np.log(bs)) * T**2 / n
  pt2 = np_softmax(t / T - 1000.0 * gt)
  log_ps2 = (s / T - 1000.0 * gt) - np.log(np.exp(s / T - 1000.0 * gt).sum(1, keepdims=True))
  nckd = np.sum(np_xlogy(pt2, pt2) - pt2 * log_ps2) * T**2 / n
  return alpha * tckd + beta * nckd


def np_dist_batch(s, t, beta=1.0, gamma=1.0, tau=1.0):
  """DIST_KD's DIST module: 1 − Pearson over classes (mean over rows) and over the batch."""
  ys, yt = np_softmax(s / tau), np_softmax(t / tau)

  def pearson_rows(a, b, eps=1e-8):
    a = a - a.mean(1, keepdims=True); b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)

  inter = 1 - pearson_rows(ys, yt).mean()
  intra = 1 - pearson_rows(ys.T, yt.T).mean()
  return tau**2 * (beta * inter + gamma * intra)


def np_at(s, t, p=2.0, beta=1e3):
  """attention-transfer cifar.py: normalize(mean_c |x|^p) per example, β·mean of squared differences
  (`opt.beta * at_loss`; the code has no ½, unlike the paper's Eq. 2)."""
  out = []
  for b in range(len(s)):
    qs = (np.abs(s[b].astype(np.float64)) ** p).mean(-1).ravel()
    qt = (np.abs(t[b].astype(np.float64)) ** p).mean(-1).ravel()
    qs /= max(np.linalg.norm(qs), 1e-12); qt /= max(np.linalg.norm(qt), 1e-12)
    out.append(beta * np.mean((qs - qt) ** 2))
  return np.array(out)


def _np_rownorm(g):
  return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def np_sp_batch(s, t):
  """CRD repo's Similarity: ‖rownorm(G_t) − rownorm(G_s)‖²_F / B²."""
  fs, ft = s.reshape(len(s), -1).astype(np.float64), t.reshape(len(t), -1).astype(np.float64)
  d = _np_rownorm(ft @ ft.T) - _np_rownorm(fs @ fs.T)
  return np.sum(d * d) / len(s) ** 2


def np_smooth_l1(x):
  ax = np.abs(x)
  return np.where(ax < 1, 0.5 * x * x, ax - 0.5)


def np_rkd_batch(s, t, w_d=25.0, w_a=50.0):
  """RKD distance + angle with explicit loops over pairs and triplets (CRD repo RKDLoss)."""
  def pdist(e):
    n = len(e)
    d = np.zeros((n, n))
    for i in range(n):
      for j in range(n):
        if i != j:
          d[i, j] = math.sqrt(max(np.sum((e[i] - e[j]) ** 2), 1e-12))
    return d / d[d > 0].mean()

  def unit(v):
    return v / max(np.linalg.norm(v), 1e-12)

  def angles(e):
    n = len(e)
    a = np.zeros((n, n, n))
    for i in range(n):
      for j in range(n):
        for k in range(n):
          a[i, j, k] = unit(e[j] - e[i]) @ unit(e[k] - e[i])
    return a

  es, et = s.reshape(len(s), -1).astype(np.float64), t.reshape(len(t), -1).astype(np.float64)
  loss_d = np.mean(np_smooth_l1(pdist(es) - pdist(et)))
  loss_a = np.mean(np_smooth_l1(angles(es) - angles(et)))
  return w_d * loss_d + w_a * loss_a


def np_pkt_batch(s, t, eps=1e-7):
  """passalis/probabilistic_kt cosine_similarity_loss (torch.mean over the B×B matrix)."""
  def affinity(x):
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
    k = (x @ x.T + 1.0) / 2.0
    return k / k.sum(1, keepdims=True)
  ps, pt = affinity(s), affinity(t)
  return np.mean(pt * np.log((pt + eps) / (ps + eps)))


def np_nst(s, t):
  """NST with the polynomial kernel (d=2, c=0) over spatially-normalised channel maps, per example."""
  out = []
  for b in range(len(s)):
    fs = s[b].reshape(-1, s.shape[-1]).T.astype(np.float64)  # [C_s, HW]
    ft = t[b].reshape(-1, t.shape[-1]).T.astype(np.float64)
    fs = fs / np.maximum(np.linalg.norm(fs, axis=1, keepdims=True), 1e-12)
    ft = ft / np.maximum(np.linalg.norm(ft, axis=1, keepdims=True), 1e-12)
    k = lambda a, c: np.mean((a @ c.T) ** 2)
    out.append(k(ft, ft) + k(fs, fs) - 2 * k(fs, ft))
  return np.array(out)


def np_cc_batch(s, t, gamma=0.4, P=2):
  """Knowledge-Distillation-Zoo CC: P-order Taylor expansion of the Gaussian RBF, MSE over B×B."""
  def corr(x):
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim**p
               for p in range(P + 1))
  return np.mean((corr(s) - corr(t)) ** 2)


def np_cc_repdistiller(s, t):
  """CRD repo's `Correlation` (distiller_zoo/CC.py): δ = |f_s − f_t|, mean over the B−1 consecutive
  pairs of Σ_d δ_i δ_{i+1}. Returns (per-example split, batch loss): each pair's product is shared
  half-and-half by its two examples, scaled by B/(B−1)."""
  d = np.abs(s.reshape(len(s), -1).astype(np.float64) - t.reshape(len(t), -1).astype(np.float64))
  n = len(d)
  pairs = [float(np.sum(d[i] * d[i + 1])) for i in range(n - 1)]
  per_example = []
  for b in range(n):
    left = pairs[b - 1] if b > 0 else 0.0
    right = pairs[b] if b < n - 1 else 0.0
    per_example.append(n / (n - 1) * 0.5 * (left + right))
  return np.array(per_example), np.mean(pairs)


def np_adaptive_avg_pool(x, size):
  """PyTorch's adaptive_avg_pool2d bins, channels-last: rows floor(i·H/h) .. ceil((i+1)·H/h) − 1."""
  x = np.asarray(x, np.float64)
  _, height, width, _ = x.shape
  h, w = size
  out = np.zeros((x.shape[0], h, w, x.shape[-1]))
  for i in range(h):
    r0, r1 = math.floor(i * height / h), math.ceil((i + 1) * height / h)
    for j in range(w):
      c0, c1 = math.floor(j * width / w), math.ceil((j + 1) * width / w)
      out[:, i, j, :] = x[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
  return out


def np_vid(mu, t, raw, eps=1e-5):
  var = np.log(1.0 + np.exp(raw.astype(np.float64))) + eps
  nll = 0.5 * ((mu.astype(np.float64) - t) ** 2 / var + np.log(var))
  return nll.reshape(len(mu), -1).mean(1)


def np_lpips(s_layers, t_layers, eps=1e-10):
  total = 0.0
  for s, t in zip(s_layers, t_layers):
    s, t = s.astype(np.float64), t.astype(np.float64)
    s = s / (np.sqrt((s**2).sum(-1, keepdims=True)) + eps)
    t = t / (np.sqrt((t**2).sum(-1, keepdims=True)) + eps)
    total = total + ((s - t) ** 2).sum(-1).reshape(len(s), -1).mean(1)
  return total


def np_softplus(x):
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def np_tempered_sigmoid_kl(ds, dt, T=1.0):
  p = 1 / (1 + np.exp(-dt.astype(np.float64) / T))
  q = 1 / (1 + np.exp(-ds.astype(np.float64) / T))
  kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
  return T * T * kl.reshape(len(ds), -1).mean(1)


def np_relation_kl(s, t, tau=0.1, exclude_self=True):
  def rows(x):
    x = x.reshape(len(x), -1).astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T / tau
    out = []
    for i in range(len(x)):
      logits = np.delete(sim[i], i) if exclude_self else sim[i]
      out.append(np_softmax(logits))
    return np.array(out)
  return np_kl(rows(t), rows(s))


def _mean_pe(x):
  x = np.asarray(x, np.float64)
  return x.reshape(len(x), -1).mean(1)


# Every registered loss: (function, positional inputs, NumPy golden per-example array or None,
# NumPy golden batch loss that mean_b must equal or None).
CASES = {
    'kd': (losses.kd, ('s_logits', 't_logits'), lambda: np_kd(X['s_logits'], X['t_logits']), None),
    'ce': (losses.ce, ('s_logits', 'labels'), lambda: np_ce(X['s_logits'], X['labels']), None),
    'hard_ce': (losses.hard_ce, ('s_logits', 't_logits'),
                lambda: np_ce(X['s_logits'], X['t_logits'].argmax(-1)), None),
    'reverse_kl': (losses.reverse_kl, ('s_logits', 't_logits'),
                   lambda: 16 * np_kl(np_softmax(X['s_logits'] / 4), np_softmax(X['t_logits'] / 4)),
                   None),
    'js': (losses.js, ('s_logits', 't_logits'), lambda: np_js(X['s_logits'], X['t_logits']), None),
    'logit_mse': (losses.logit_mse, ('s_logits', 't_logits'),
                  lambda: _mean_pe((X['s_logits'] - X['t_logits'].astype(np.float64)) ** 2), None),
    'dkd': (losses.dkd, ('s_logits', 't_logits', 'labels'), None,
            lambda: np_dkd_batch(X['s_logits'], X['t_logits'], X['labels'])),
    'dist': (losses.dist, ('s_logits', 't_logits'), None,
             lambda: np_dist_batch(X['s_logits'], X['t_logits'])),
    'fitnet': (losses.fitnet, ('s_map', 's_map_same'),
               lambda: _mean_pe((X['s_map'] - X['s_map_same'].astype(np.float64)) ** 2), None),
    'at': (losses.at, ('s_map', 't_map'), lambda: np_at(X['s_map'], X['t_map']), None),
    'sp': (losses.sp, ('s_map', 't_map'), None, lambda: np_sp_batch(X['s_map'], X['t_map'])),
    'rkd': (losses.rkd, ('s_emb', 't_emb'), None, lambda: np_rkd_batch(X['s_emb'], X['t_emb'])),
    'pkt': (losses.pkt, ('s_emb', 't_emb'), None, lambda: np_pkt_batch(X['s_emb'], X['t_emb'])),
    'nst': (losses.nst, ('s_map', 't_map'), lambda: np_nst(X['s_map'], X['t_map']), None),
    'cc': (losses.cc, ('s_emb', 't_emb'), None, lambda: np_cc_batch(X['s_emb'], X['t_emb'])),
    'cc_repdistiller': (feature.cc_repdistiller, ('s_emb_wide', 't_emb'),
                        lambda: np_cc_repdistiller(X['s_emb_wide'], X['t_emb'])[0],
                        lambda: np_cc_repdistiller(X['s_emb_wide'], X['t_emb'])[1]),
    'vid': (losses.vid, ('s_map', 's_map_same', 'raw_var'),
            lambda: np_vid(X['s_map'], X['s_map_same'], X['raw_var']), None),
    'l1': (losses.l1, ('s_img', 't_img'),
           lambda: _mean_pe(np.abs(X['s_img'] - X['t_img'].astype(np.float64))), None),
    'l2': (losses.l2, ('s_img', 't_img'),
           lambda: _mean_pe((X['s_img'] - X['t_img'].astype(np.float64)) ** 2), None),
    'lpips': (losses.lpips, ('lp_s', 'lp_t'),
              lambda: np_lpips([X['s_map'], X['s_img']], [X['s_map_same'], X['t_img']]), None),
    'feature_mse': (losses.feature_mse, ('s_map', 's_map_same'),
                    lambda: _mean_pe((X['s_map'] - X['s_map_same'].astype(np.float64)) ** 2), None),
    'gan_ns_g': (losses.gan_ns_g, ('d_fake',), lambda: _mean_pe(np_softplus(-X['d_fake'])), None),
    'gan_ns_d': (losses.gan_ns_d, ('d_real', 'd_fake'),
                 lambda: _mean_pe(np_softplus(-X['d_real'])) + _mean_pe(np_softplus(X['d_fake'])),
                 None),
    'tempered_sigmoid_kl': (losses.tempered_sigmoid_kl, ('d_fake', 'd_teacher'),
                            lambda: np_tempered_sigmoid_kl(X['d_fake'], X['d_teacher']), None),
    'relation_kl': (losses.relation_kl, ('s_emb', 't_emb'),
                    lambda: np_relation_kl(X['s_emb'], X['t_emb']), None),
}


def _args(keys: tuple[str, ...]) -> tuple:
  pool = {**X, 'lp_s': [X['s_map'], X['s_img']], 'lp_t': [X['s_map_same'], X['t_img']]}
  return tuple(jax.tree.map(jnp.asarray, pool[k]) for k in keys)


# Losses whose inputs come with state (CRD's memory bank) have their own golden tests.
TESTED_ELSEWHERE = {'crd': 'tests/test_losses_crd.py', 'weighted_l2': 'tests/test_diffusion.py'}
# Tested here but not yet in the registry (registry.py is edited separately); empty this set once
# they are registered, so the test below again demands that every case is a registered name.
AWAITING_REGISTRATION: set[str] = set()


def test_every_registered_loss_is_tested():
  assert set(CASES) | set(TESTED_ELSEWHERE) == set(losses.names()) | AWAITING_REGISTRATION


@functools.cache
def _jitted_value_and_grad(fn):
  def mean_and_values(x, rest):
    values = fn(x, *rest)
    return jnp.mean(values), values
  return jax.jit(jax.value_and_grad(mean_and_values, has_aux=True))


def _value_and_student_grad(fn, args):
  """Per-example values and the gradient of their mean w.r.t. the first (student) input.

  Jitted and cached per loss: one compilation per loss and input shape is far cheaper than eager
  op-by-op dispatch of a backward pass.
  """
  (_, values), grad = _jitted_value_and_grad(fn)(args[0], args[1:])
  return values, grad


@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_numpy_reference_jit_eager_and_grads(name):
  fn, keys, per_example, batch = CASES[name]
  args = _args(keys)
  out, grad = _value_and_student_grad(fn, args)
  assert out.shape == (B,) and out.dtype == jnp.float32
  if per_example is not None:
    np.testing.assert_allclose(out, per_example(), rtol=RTOL, atol=ATOL)
  if batch is not None:
    # Batch-relational: the mean of the per-example decomposition is the reference batch loss.
    np.testing.assert_allclose(jnp.mean(out), batch(), rtol=RTOL, atol=ATOL)
  # Eager (op-by-op) execution agrees with the jitted one.
  np.testing.assert_allclose(fn(*args), out, rtol=1e-6, atol=1e-6)
  assert np.all(np.isfinite(out))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grad))


@pytest.mark.parametrize('name', ['at', 'sp', 'rkd', 'pkt', 'nst', 'cc', 'cc_repdistiller',
                                  'relation_kl', 'lpips'])
def test_gradients_finite_at_degenerate_features(name):
  """Zero maps, zero rows and duplicate examples: where naive norms/sqrt give NaN gradients."""
  fn, keys, _, _ = CASES[name]
  args = list(_args(keys))
  def degenerate(x):
    x = x.at[0].set(0.0)          # an all-zero example (e.g. dead ReLU features)
    return x.at[2].set(x[1])      # two identical examples
  args[0] = jax.tree.map(degenerate, args[0])
  out, g = _value_and_student_grad(fn, args)
  assert np.all(np.isfinite(out))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))


@pytest.mark.parametrize('name', ['kd', 'dkd', 'at', 'rkd', 'cc_repdistiller', 'relation_kl'])
def test_check_grads(name):
  fn, keys, _, _ = CASES[name]
  args = _args(keys)
  # Finite differences in float32 need a larger step; float-valued inputs only.
  check_grads(jax.jit(lambda x: fn(x, *args[1:])), (args[0],), order=1, modes=('rev',), eps=1e-2,
              atol=2e-2, rtol=2e-2)


def test_vid_gradient_reaches_the_variance_parameter():
  mu, t, raw = _args(('s_map', 's_map_same', 'raw_var'))
  g = jax.jit(jax.grad(lambda v: jnp.mean(losses.vid(mu, t, v))))(raw)
  assert g.shape == raw.shape and np.all(np.isfinite(g)) and np.any(g != 0)


# ----------------------------------------------------------------------------------------------
# Hand-computed cases and invariances.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fn', [losses.kd, losses.reverse_kl, losses.js])
def test_divergence_of_identical_logits_is_zero(fn):
  s = jnp.asarray(X['s_logits'])
  np.testing.assert_allclose(fn(s, s), np.zeros(B), atol=1e-6)
  # Softmax is shift-invariant, so a per-row constant offset is still a perfect match.
  np.testing.assert_allclose(fn(s, s + 3.0), np.zeros(B), atol=1e-5)


def test_dkd_and_dist_of_identical_logits_are_zero():
  s = jnp.asarray(X['s_logits'])
  np.testing.assert_allclose(losses.dkd(s, s, jnp.asarray(X['labels'])), np.zeros(B), atol=1e-5)
  np.testing.assert_allclose(losses.dist(s, s), np.zeros(B), atol=1e-5)


def test_kd_temperature_enters_as_t_squared():
  s, t = jnp.asarray(X['s_logits']), jnp.asarray(X['t_logits'])
  for temp in (1.0, 2.0, 4.0):
    # T² · KL at temperature T == T² × (KL of the logits pre-divided by T, at T=1).
    np.testing.assert_allclose(losses.kd(s, t, temperature=temp),
                               temp**2 * losses.kd(s / temp, t / temp, temperature=1.0), rtol=1e-5)
  np.testing.assert_allclose(losses.kd(s, t, temperature=1.0), np_kd(X['s_logits'], X['t_logits'], 1.0),
                             rtol=RTOL)


def test_kd_hand_computed_two_classes():
  # Teacher p = softmax([0, ln 3]) = [1/4, 3/4]; student q = [1/2, 1/2]; T=1.
  # KL(p‖q) = 1/4 ln(1/2) + 3/4 ln(3/2).
  expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
  out = losses.kd(jnp.zeros([1, 2]), jnp.array([[0.0, math.log(3.0)]]), temperature=1.0)
  np.testing.assert_allclose(out, [expected], rtol=1e-6)


def test_ce_hand_computed_and_label_smoothing():
  np.testing.assert_allclose(losses.ce(jnp.zeros([2, 4]), jnp.array([0, 3])), [math.log(4)] * 2,
                             rtol=1e-6)
  s, y = jnp.asarray(X['s_logits']), jnp.asarray(X['labels'])
  eps = 0.1
  target = (1 - eps) * np.eye(5)[X['labels']] + eps / 5
  expected = -(target * np.log(np_softmax(X['s_logits']))).sum(-1)
  np.testing.assert_allclose(losses.ce(s, y, label_smoothing=eps), expected, rtol=RTOL)


def test_hard_ce_has_no_teacher_gradient():
  s, t = jnp.asarray(X['s_logits']), jnp.asarray(X['t_logits'])
  g = jax.grad(lambda t_: jnp.sum(losses.hard_ce(s, t_)))(t)
  np.testing.assert_array_equal(g, np.zeros_like(g))


def test_dist_per_example_decomposition():
  s, t = X['s_logits'], X['t_logits']
  out = np.asarray(losses.dist(jnp.asarray(s), jnp.asarray(t)))
  ys, yt = np_softmax(s), np_softmax(t)
  a, b = ys - ys.mean(1, keepdims=True), yt - yt.mean(1, keepdims=True)
  inter = 1 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)
  # Rows differ only through the inter-class term; the intra-class term is a shared constant.
  np.testing.assert_allclose(out - out.mean(), inter - inter.mean(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', ['at', 'sp', 'rkd', 'cc', 'pkt', 'nst', 'relation_kl'])
def test_invariant_to_positive_feature_scaling(name):
  fn, keys, _, _ = CASES[name]
  s, t = _args(keys)
  base = fn(s, t)
  np.testing.assert_allclose(fn(3.0 * s, t), base, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(fn(s, 0.5 * t), base, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', ['at', 'sp', 'rkd', 'cc', 'cc_repdistiller', 'pkt', 'nst',
                                  'relation_kl', 'fitnet', 'feature_mse', 'l1', 'l2', 'lpips'])
def test_feature_losses_vanish_for_identical_inputs(name):
  fn, keys, _, _ = CASES[name]
  s = _args(keys)[0]
  np.testing.assert_allclose(fn(s, s), np.zeros(B), atol=1e-5)


def test_at_beta_convention():
  s, t = _args(('s_map', 't_map'))
  # β is inside the loss, without the paper's ½ (the authors' code): the default (β=1e3) is
  # 1000 × the raw attention distance at_loss = mean (q̂_s − q̂_t)².
  np.testing.assert_allclose(losses.at(s, t), 1000.0 * losses.at(s, t, beta=1.0), rtol=1e-6)


def test_cc_repdistiller_hand_computed_order_and_batch_of_one():
  s = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  # δ = s; pairs (0,1) and (1,2) both give 1, L = 1; rows carry ½, ½+½, ½ pairs, scaled by 3/2.
  np.testing.assert_allclose(feature.cc_repdistiller(s, jnp.zeros_like(s)), [0.75, 1.5, 0.75],
                             rtol=1e-6)
  # It pairs consecutive examples, so the batch order matters (unlike every other relational loss).
  perm = jnp.array([1, 0, 2])
  assert not np.isclose(jnp.mean(feature.cc_repdistiller(s[perm], jnp.zeros_like(s))), 1.0)
  np.testing.assert_array_equal(feature.cc_repdistiller(s[:1], jnp.zeros_like(s[:1])), [0.0])


def test_cc_magnitudes_paper_form_vs_repdistiller():
  """The paper's kernel form is ~1e4× smaller than the CRD repo's `Correlation` on equal inputs
  (the weight advice in `cc`'s docstring rests on this)."""
  r = _rng(1)
  s = r.standard_normal((64, 64)).astype(np.float32)
  for t in (r.standard_normal((64, 64)), s + 0.3 * r.standard_normal((64, 64))):
    t = jnp.asarray(t, jnp.float32)
    ratio = float(jnp.mean(feature.cc_repdistiller(s, t)) / jnp.mean(losses.cc(s, t)))
    assert 5e3 < ratio < 5e4, ratio


def test_relation_kl_with_self_similarity_and_batch_of_one():
  s, t = _args(('s_emb', 't_emb'))
  np.testing.assert_allclose(losses.relation_kl(s, t, exclude_self=False, temperature=0.5),
                             np_relation_kl(X['s_emb'], X['t_emb'], 0.5, exclude_self=False),
                             rtol=RTOL, atol=ATOL)
  np.testing.assert_array_equal(losses.relation_kl(s[:1], t[:1]), [0.0])


def test_gan_losses_hand_computed():
  np.testing.assert_allclose(losses.gan_ns_g(jnp.zeros([3])), [math.log(2)] * 3, rtol=1e-6)
  np.testing.assert_allclose(losses.gan_ns_d(jnp.zeros([2, 1]), jnp.zeros([2, 1])),
                             [2 * math.log(2)] * 2, rtol=1e-6)
  # A confident, correct discriminator has a near-zero loss; the generator then has a large one.
  assert float(losses.gan_ns_d(jnp.array([20.0]), jnp.array([-20.0]))[0]) < 1e-8
  assert float(losses.gan_ns_g(jnp.array([-20.0]))[0]) > 19.9


def test_tempered_sigmoid_kl_temperature():
  d_s, d_t = _args(('d_fake', 'd_teacher'))
  np.testing.assert_allclose(losses.tempered_sigmoid_kl(d_s, d_t, temperature=2.0),
                             np_tempered_sigmoid_kl(X['d_fake'], X['d_teacher'], 2.0), rtol=RTOL)
  np.testing.assert_allclose(losses.tempered_sigmoid_kl(d_t, d_t), np.zeros(B), atol=1e-6)


def test_vid_init_gives_the_requested_variance():
  v = losses.vid_log_variance_init(3, init_variance=5.0, eps=1e-5)
  np.testing.assert_allclose(jax.nn.softplus(v) + 1e-5, [5.0] * 3, rtol=1e-6)


def test_bfloat16_inputs_compute_in_float32():
  s = jnp.asarray(X['s_logits'], jnp.bfloat16)
  t = jnp.asarray(X['t_logits'], jnp.bfloat16)
  out = losses.kd(s, t)
  assert out.dtype == jnp.float32
  # Same as upcasting first: no softmax/log was done in bfloat16.
  np.testing.assert_allclose(out, losses.kd(s.astype(jnp.float32), t.astype(jnp.float32)), rtol=1e-6)


@pytest.mark.parametrize('call, match', [
    (lambda: losses.fitnet(jnp.zeros([2, 3, 3, 4]), jnp.zeros([2, 3, 3, 8])), 'adapter'),
    (lambda: losses.at(jnp.zeros([2, 4, 4, 4]), jnp.zeros([3, 2, 2, 4])), 'same batch size'),
    (lambda: losses.nst(jnp.zeros([2, 4]), jnp.zeros([2, 4])), r'feature maps \[B, H, W, C\]'),
    (lambda: losses.vid(jnp.zeros([2, 4, 4, 4]), jnp.zeros([2, 2, 2, 6]), jnp.zeros([6])), 'adapter'),
    (lambda: feature.cc_repdistiller(jnp.zeros([2, 4]), jnp.zeros([2, 8])), 'adapter'),
    (lambda: losses.sp(jnp.zeros([2, 4]), jnp.zeros([3, 4])), 'batch'),
    (lambda: losses.vid(jnp.zeros([2, 4]), jnp.zeros([2, 4]), jnp.zeros([3])), 'vid_log_variance_init'),
    (lambda: losses.ce(jnp.zeros([2, 4]), jnp.zeros([2, 4], jnp.int32)), 'integer class ids'),
    (lambda: losses.lpips([jnp.zeros([2, 2, 2, 3])], []), 'same layers'),
    (lambda: losses.dkd(jnp.zeros([2, 2, 3]), jnp.zeros([2, 2, 3]), jnp.zeros([2], jnp.int32)),
     r'\[batch, classes\]'),
])
def test_shape_errors_are_config_errors(call, match):
  with pytest.raises(errors.ConfigError, match=match):
    call()


def test_shape_errors_name_no_config_fields():
  """Losses take plain values; the config context (config.losses[i]) is added by compose."""
  for call in (lambda: losses.fitnet(jnp.zeros([2, 3]), jnp.zeros([2, 4])),
               lambda: losses.at(jnp.zeros([2, 4]), jnp.zeros([2, 4])),
               lambda: losses.sp(jnp.zeros([2, 4]), jnp.zeros([3, 4])),
               lambda: losses.vid(jnp.zeros([2, 4]), jnp.zeros([2, 4]), jnp.zeros([3])),
               lambda: losses.lpips([jnp.zeros([2, 2, 2, 3])], [])):
    with pytest.raises(errors.ConfigError) as info:
      call()
    assert 'config.' not in str(info.value)


def test_mean_squared_error_losses_are_one_implementation():
  s, t = _args(('s_map', 's_map_same'))
  expected = _mean_pe((X['s_map'] - X['s_map_same'].astype(np.float64)) ** 2)
  for fn in (losses.fitnet, losses.feature_mse, losses.l2, functools.partial(_utils.mean_squared_error, 'x')):
    np.testing.assert_allclose(fn(s, t), expected, rtol=RTOL, atol=ATOL)
  # Each public name keeps its own docstring and names itself in the shape error.
  for fn, name in ((losses.fitnet, 'fitnet'), (losses.feature_mse, 'feature_mse'), (losses.l2, 'l2')):
    assert fn.__doc__ and 'mean_squared_error' in fn.__doc__
    with pytest.raises(errors.ConfigError, match=f"loss '{name}'"):
      fn(jnp.zeros([2, 3]), jnp.zeros([2, 4]))


# ----------------------------------------------------------------------------------------------
# Adaptive average pooling and losses on feature maps of different spatial size.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('in_size, out_size', [
    ((5, 5), (3, 3)), ((7, 5), (3, 2)), ((10, 7), (4, 3)), ((6, 6), (3, 3)), ((8, 6), (2, 3)),
    ((4, 6), (4, 3)), ((3, 3), (5, 4)), ((9, 7), (1, 1))])
def test_adaptive_avg_pool_matches_pytorch_bins(in_size, out_size):
  x = _rng(2).standard_normal((2, *in_size, 3)).astype(np.float32)
  out = jax.jit(_utils.adaptive_avg_pool, static_argnums=1)(jnp.asarray(x), out_size)
  assert out.shape == (2, *out_size, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, np_adaptive_avg_pool(x, out_size), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(_utils.adaptive_avg_pool(jnp.asarray(x), out_size), out, rtol=1e-6,
                             atol=1e-6)


def test_adaptive_avg_pool_hand_computed_and_integer_ratio():
  # H=5 -> 3: bins [0, 2), [1, 4), [3, 5) overlap by one element (floor/ceil bounds).
  x = jnp.arange(5.0).reshape(1, 5, 1, 1)
  np.testing.assert_allclose(_utils.adaptive_avg_pool(x, (3, 1))[0, :, 0, 0], [0.5, 2.0, 3.5])
  # An integer ratio is a plain block mean.
  y = _rng(3).standard_normal((2, 6, 8, 3)).astype(np.float32)
  block = y.astype(np.float64).reshape(2, 3, 2, 2, 4, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(_utils.adaptive_avg_pool(jnp.asarray(y), (3, 2)), block, rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_array_equal(_utils.adaptive_avg_pool(jnp.asarray(y), (6, 8)), y)


def _pooled(key, size):
  return np_adaptive_avg_pool(X[key], size).astype(np.float32)


@pytest.mark.parametrize('name, golden', [('at', np_at), ('nst', np_nst)])
@pytest.mark.parametrize('s_key, t_key', [('s_map_big', 't_map'), ('s_map', 't_map_big')])
def test_at_nst_pool_the_larger_map(name, golden, s_key, t_key):
  fn = CASES[name][0]
  s, t = _args((s_key, t_key))
  out, grad = _value_and_student_grad(fn, (s, t))
  # Student 5×5 (non-integer ratio) or teacher 6×6 (integer ratio) pooled to the other's 3×3.
  s_np = _pooled(s_key, (3, 3)) if s.shape[1] > 3 else X[s_key]
  t_np = _pooled(t_key, (3, 3)) if t.shape[1] > 3 else X[t_key]
  np.testing.assert_allclose(out, fn(jnp.asarray(s_np), jnp.asarray(t_np)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out, golden(s_np, t_np), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(fn(s, t), out, rtol=1e-6, atol=1e-6)
  assert grad.shape == s.shape and np.all(np.isfinite(grad))


def test_vid_pools_mean_and_target_to_the_smaller_map():
  raw = jnp.asarray(X['raw_var'])
  small, big = _args(('s_map', 's_map_big'))  # both 6 channels: the variance is per channel
  # Target larger (the reference's usual case) and student larger.
  np.testing.assert_allclose(losses.vid(small, big, raw),
                             np_vid(X['s_map'], _pooled('s_map_big', (3, 3)), X['raw_var']),
                             rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(losses.vid(big, small, raw),
                             np_vid(_pooled('s_map_big', (3, 3)), X['s_map'], X['raw_var']),
                             rtol=RTOL, atol=ATOL)
  g_mu, g_var = jax.jit(jax.grad(lambda m, v: jnp.mean(losses.vid(m, small, v)), argnums=(0, 1)))(big, raw)
  assert g_mu.shape == big.shape and np.all(np.isfinite(g_mu)) and np.all(np.isfinite(g_var))


def test_non_square_maps_pool_each_axis_to_the_smaller_size():
  r = _rng(4)
  s = r.standard_normal((B, 6, 3, 4)).astype(np.float32)
  t = r.standard_normal((B, 3, 6, 5)).astype(np.float32)
  expected = np_at(np_adaptive_avg_pool(s, (3, 3)), np_adaptive_avg_pool(t, (3, 3)))
  np.testing.assert_allclose(losses.at(jnp.asarray(s), jnp.asarray(t)), expected, rtol=RTOL, atol=ATOL)
