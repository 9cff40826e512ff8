"""Tests for contrastive representation distillation (kd_jax.losses.contrast).

The golden values come from `NpContrastMemory` / `np_contrast_loss` / `np_embed` below: a float64 NumPy
port written literally like the authors' PyTorch code (HobbitLong/RepDistiller `crd/memory.py`
`ContrastMemory.forward` and `crd/criterion.py` `ContrastLoss`, `Embed`, `Normalize`, `CRDLoss`):
index_select + view, bmm, exp(·/T), Z set from the first batch in the `params` buffer, division by Z,
the momentum update with row normalisation and `index_copy_`, and ContrastLoss's sums over [B, K+1, 1]
tensors divided by bsz. The fixed inputs (two consecutive batches, embed weights, initial memories and
the contrast indices) are stored in tests/data/crd_inputs.npz, written by `write_inputs` (not run at
test time: `PYTHONPATH=. python tests/test_losses_crd.py` regenerates the file).
"""
from __future__ import annotations

import inspect
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

from kd_jax import errors
from kd_jax import losses
from kd_jax.losses import contrast

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'crd_inputs.npz')
B, D, N, K = 4, 6, 20, 5          # batch, embedding width, dataset size (memory rows), negatives
TEMPERATURE, MOMENTUM = 0.07, 0.5  # the reference defaults nce_t, nce_m
RTOL, ATOL = 1e-5, 1e-6


def write_inputs(path: str = DATA) -> None:
  """Writes the fixed inputs. Not called by the tests; run this file as a script to regenerate."""
  r = np.random.default_rng(2020)
  f32 = lambda *shape, scale=1.0: (scale * r.standard_normal(shape)).astype(np.float32)
  stdv = 1.0 / math.sqrt(D / 3)  # ContrastMemory's init: torch.rand(N, D) * 2 stdv - stdv
  y1 = r.choice(N, B, replace=False)
  # The second batch shares two examples with the first, so it reads (and rewrites) updated rows.
  y2 = np.concatenate([y1[:2], r.choice(np.setdiff1d(np.arange(N), y1), B - 2, replace=False)])
  idx1 = r.integers(0, N, (B, K + 1))
  idx1[:, 0] = y1
  idx2 = r.integers(0, N, (B, K + 1))
  idx2[:, 0] = y2
  np.savez(
      path,
      # Student features are maps (Embed flattens them), teacher features flat, of another width.
      s_feat1=f32(B, 2, 2, 3), t_feat1=f32(B, 10), s_feat2=f32(B, 2, 2, 3), t_feat2=f32(B, 10),
      # Embed weights in flax layout: kernel [in, out] (= torch Linear weight transposed), bias [out].
      s_kernel=f32(12, D, scale=0.5), s_bias=f32(D, scale=0.1),
      t_kernel=f32(10, D, scale=0.5), t_bias=f32(D, scale=0.1),
      memory_v1=(r.random((N, D)) * 2 * stdv - stdv).astype(np.float32),
      memory_v2=(r.random((N, D)) * 2 * stdv - stdv).astype(np.float32),
      y1=y1.astype(np.int32), idx1=idx1.astype(np.int32),
      y2=y2.astype(np.int32), idx2=idx2.astype(np.int32))


X = dict(np.load(DATA)) if os.path.exists(DATA) else {}  # {} only while regenerating


# ----------------------------------------------------------------------------------------------
# Literal float64 NumPy port of the reference.
# ----------------------------------------------------------------------------------------------

def np_embed(x, kernel, bias):
  """Embed.forward: x.view(B, -1) -> nn.Linear -> Normalize(2)."""
  x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  x = x @ kernel.astype(np.float64) + bias.astype(np.float64)
  norm = np.power(np.power(x, 2).sum(1, keepdims=True), 1.0 / 2)
  return x / norm


class NpContrastMemory:
  """ContrastMemory with the contrast indices given (the reference's `idx` argument)."""

  def __init__(self, memory_v1, memory_v2, K, T=0.07, momentum=0.5):
    self.params = np.array([K, T, -1, -1, momentum], np.float64)
    self.memory_v1 = np.array(memory_v1, np.float64)
    self.memory_v2 = np.array(memory_v2, np.float64)

  def forward(self, v1, v2, y, idx):
    K = int(self.params[0])
    T = self.params[1]
    Z_v1 = self.params[2]
    Z_v2 = self.params[3]
    momentum = self.params[4]
    batchSize = v1.shape[0]
    outputSize = self.memory_v1.shape[0]
    inputSize = self.memory_v1.shape[1]

    weight_v1 = np.take(self.memory_v1, idx.reshape(-1), axis=0).copy()
    weight_v1 = weight_v1.reshape(batchSize, K + 1, inputSize)
    out_v2 = np.matmul(weight_v1, v2.reshape(batchSize, inputSize, 1))
    out_v2 = np.exp(out_v2 / T)
    weight_v2 = np.take(self.memory_v2, idx.reshape(-1), axis=0).copy()
    weight_v2 = weight_v2.reshape(batchSize, K + 1, inputSize)
    out_v1 = np.matmul(weight_v2, v1.reshape(batchSize, inputSize, 1))
    out_v1 = np.exp(out_v1 / T)

    if Z_v1 < 0:
      self.params[2] = out_v1.mean() * outputSize
      Z_v1 = self.params[2]
    if Z_v2 < 0:
      self.params[3] = out_v2.mean() * outputSize
      Z_v2 = self.params[3]

    out_v1 = out_v1 / Z_v1
    out_v2 = out_v2 / Z_v2

    l_pos = np.take(self.memory_v1, y.reshape(-1), axis=0)
    l_pos = l_pos * momentum
    l_pos = l_pos + v1 * (1 - momentum)
    l_norm = np.power(np.power(l_pos, 2).sum(1, keepdims=True), 0.5)
    updated_v1 = l_pos / l_norm
    self.memory_v1[y] = updated_v1  # index_copy_(0, y, updated_v1)

    ab_pos = np.take(self.memory_v2, y.reshape(-1), axis=0)
    ab_pos = ab_pos * momentum
    ab_pos = ab_pos + v2 * (1 - momentum)
    ab_norm = np.power(np.power(ab_pos, 2).sum(1, keepdims=True), 0.5)
    updated_v2 = ab_pos / ab_norm
    self.memory_v2[y] = updated_v2

    return out_v1, out_v2  # [B, K+1, 1] each


def np_contrast_loss(x, n_data, eps=1e-7):
  """ContrastLoss.forward on the [B, K+1, 1] scores."""
  bsz = x.shape[0]
  m = x.shape[1] - 1
  Pn = 1 / float(n_data)
  P_pos = x[:, 0]
  log_D1 = np.log(P_pos / (P_pos + (m * Pn + eps)))
  P_neg = x[:, 1:1 + m]
  log_D0 = np.log(np.full_like(P_neg, m * Pn) / (P_neg + (m * Pn + eps)))
  loss = -(log_D1.sum(0) + log_D0.reshape(-1, 1).sum(0)) / bsz
  return loss[0]


def reference_run():
  """CRDLoss.forward on batch 1 then batch 2: per batch the loss, scores, Z and the memories after."""
  mem = NpContrastMemory(X['memory_v1'], X['memory_v2'], K, TEMPERATURE, MOMENTUM)
  out = []
  for step in (1, 2):
    f_s = np_embed(X[f's_feat{step}'], X['s_kernel'], X['s_bias'])
    f_t = np_embed(X[f't_feat{step}'], X['t_kernel'], X['t_bias'])
    out_s, out_t = mem.forward(f_s, f_t, X[f'y{step}'], X[f'idx{step}'])
    out.append({
        'loss': np_contrast_loss(out_s, N) + np_contrast_loss(out_t, N),
        'student_scores': out_s[..., 0], 'teacher_scores': out_t[..., 0],
        'z_student': mem.params[2], 'z_teacher': mem.params[3],
        'student': mem.memory_v1.copy(), 'teacher': mem.memory_v2.copy(),
        'v_s': f_s, 'v_t': f_t,
    })
  return out


# ----------------------------------------------------------------------------------------------
# The JAX side.
# ----------------------------------------------------------------------------------------------

EMBED = contrast.Embed(features=D)


def _embed_params(prefix: str) -> dict:
  return {'params': {'linear': {'kernel': jnp.asarray(X[f'{prefix}_kernel']),
                                'bias': jnp.asarray(X[f'{prefix}_bias'])}}}


def _memory0() -> dict:
  return {'student': jnp.asarray(X['memory_v1']), 'teacher': jnp.asarray(X['memory_v2']),
          'z_student': jnp.array(-1.0, jnp.float32), 'z_teacher': jnp.array(-1.0, jnp.float32)}


def crd_step(params_s, params_t, memory, s_feat, t_feat, positive, indices):
  """One CRD step as a trainer runs it: embed, score, per-example loss, then update the memory."""
  v_s = EMBED.apply(params_s, s_feat)
  v_t = EMBED.apply(params_t, t_feat)
  s_scores, t_scores, memory = contrast.contrast_scores(memory, v_s, v_t, indices,
                                                        temperature=TEMPERATURE)
  loss = losses.crd(s_scores, t_scores, num_data=jnp.asarray(N))
  memory = contrast.update_memory(memory, v_s, v_t, positive, momentum=MOMENTUM)
  return loss, s_scores, t_scores, memory


def run(step_fn=jax.jit(crd_step)):
  params_s, params_t = _embed_params('s'), _embed_params('t')
  memory, out = _memory0(), []
  for step in (1, 2):
    loss, s_scores, t_scores, memory = step_fn(
        params_s, params_t, memory, X[f's_feat{step}'], X[f't_feat{step}'], X[f'y{step}'],
        X[f'idx{step}'])
    out.append({'loss_per_example': loss, 'student_scores': s_scores, 'teacher_scores': t_scores,
                **memory})
  return out


# ----------------------------------------------------------------------------------------------
# Agreement with the reference.
# ----------------------------------------------------------------------------------------------

def test_inputs_file_is_as_documented():
  assert X['s_feat1'].shape == (B, 2, 2, 3) and X['t_feat1'].shape == (B, 10)
  assert X['memory_v1'].shape == (N, D) and X['idx1'].shape == (B, K + 1)
  np.testing.assert_array_equal(X['idx1'][:, 0], X['y1'])
  np.testing.assert_array_equal(X['idx2'][:, 0], X['y2'])
  assert len(set(X['y1'])) == B and len(set(X['y2'])) == B  # index_copy_ needs distinct positives
  assert set(X['y1']) & set(X['y2'])  # batch 2 revisits rows that batch 1 updated


def test_embed_matches_reference_and_has_unit_norm():
  for prefix in ('s', 't'):
    out = EMBED.apply(_embed_params(prefix), X[f'{prefix}_feat1'])
    assert out.shape == (B, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, np_embed(X[f'{prefix}_feat1'], X[f'{prefix}_kernel'],
                                             X[f'{prefix}_bias']), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(jnp.linalg.norm(out, axis=1), np.ones(B), rtol=1e-6)


def test_embed_init_shapes():
  params = EMBED.init(jax.random.key(0), jnp.ones([2, 3, 4]))
  assert params['params']['linear']['kernel'].shape == (12, D)
  assert params['params']['linear']['bias'].shape == (D,)


@pytest.mark.parametrize('step', [0, 1])
def test_two_steps_match_reference(step):
  """Batch 1 sets Z and updates the memory; batch 2 keeps Z and reads the updated memory."""
  ours, ref = run()[step], reference_run()[step]
  loss = ours['loss_per_example']
  assert loss.shape == (B,) and loss.dtype == jnp.float32
  # The per-example decomposition's batch mean is CRDLoss.
  np.testing.assert_allclose(jnp.mean(loss), ref['loss'], rtol=RTOL, atol=ATOL)
  for key in ('student_scores', 'teacher_scores', 'z_student', 'z_teacher', 'student', 'teacher'):
    np.testing.assert_allclose(ours[key], ref[key], rtol=RTOL, atol=ATOL, err_msg=key)


def test_z_is_set_by_the_first_batch_only():
  first, second = run()
  ref = reference_run()
  assert float(first['z_student']) > 0 and float(first['z_teacher']) > 0
  np.testing.assert_array_equal(second['z_student'], first['z_student'])
  np.testing.assert_array_equal(second['z_teacher'], first['z_teacher'])
  # What batch 2 alone would have given is different, so "kept" is not a coincidence.
  fresh = NpContrastMemory(ref[0]['student'], ref[0]['teacher'], K, TEMPERATURE, MOMENTUM)
  fresh.forward(ref[1]['v_s'], ref[1]['v_t'], X['y2'], X['idx2'])
  assert abs(fresh.params[2] - ref[1]['z_student']) > 1e-3 * ref[1]['z_student']


def test_contrast_scores_leaves_the_banks_to_update_memory():
  memory = _memory0()
  v_s = EMBED.apply(_embed_params('s'), X['s_feat1'])
  v_t = EMBED.apply(_embed_params('t'), X['t_feat1'])
  _, _, scored = contrast.contrast_scores(memory, v_s, v_t, X['idx1'])
  np.testing.assert_array_equal(scored['student'], memory['student'])
  updated = contrast.update_memory(scored, v_s, v_t, X['y1'])
  np.testing.assert_array_equal(updated['z_student'], scored['z_student'])
  others = np.setdiff1d(np.arange(N), X['y1'])
  for bank in ('student', 'teacher'):
    np.testing.assert_array_equal(updated[bank][others], memory[bank][others])
    np.testing.assert_allclose(jnp.linalg.norm(updated[bank][X['y1']], axis=1), np.ones(B), rtol=1e-6)


def test_jit_equals_eager():
  # exp(<m, v>/0.07) turns float32 rounding of the dot products (fused or not) into ~1e-6 relative.
  jitted, eager = run(), run(crd_step)
  for a, b in zip(jitted, eager):
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=1e-7, err_msg=key)


def test_batch_sharded_over_a_mesh_equals_single_device():
  """The memory is replicated, the batch split over `data`: the global batch gives the same step."""
  mesh = Mesh(np.asarray(jax.devices()[:2]), ('data',))
  batch, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  args = (_embed_params('s'), _embed_params('t'), _memory0(), X['s_feat1'], X['t_feat1'], X['y1'],
          X['idx1'])
  shardings = (replicated, replicated, replicated, batch, batch, batch, batch)
  sharded = jax.jit(crd_step)(*[jax.device_put(a, s) for a, s in zip(args, shardings)])
  single = jax.jit(crd_step)(*args)
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Gradients.
# ----------------------------------------------------------------------------------------------

def _mean_loss(v_s, v_t, memory):
  s_scores, t_scores, _ = contrast.contrast_scores(memory, v_s, v_t, X['idx1'])
  return jnp.mean(losses.crd(s_scores, t_scores, num_data=N))


def test_gradients_reach_both_embeddings_and_not_the_memory():
  v_s = EMBED.apply(_embed_params('s'), X['s_feat1'])
  v_t = EMBED.apply(_embed_params('t'), X['t_feat1'])
  g_s, g_t, g_mem = jax.jit(jax.grad(_mean_loss, argnums=(0, 1, 2)))(v_s, v_t, _memory0())
  for g in (g_s, g_t):
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
  for leaf in jax.tree.leaves(g_mem):
    np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
  # Z is fixed after the first batch; with Z already set the gradient is still finite.
  _, _, memory = contrast.contrast_scores(_memory0(), v_s, v_t, X['idx1'])
  g_s2 = jax.grad(_mean_loss)(v_s, v_t, memory)
  assert np.all(np.isfinite(g_s2))


def test_gradients_reach_the_embed_heads():
  def loss(params_s, params_t):
    out, *_ = crd_step(params_s, params_t, _memory0(), X['s_feat1'], X['t_feat1'], X['y1'], X['idx1'])
    return jnp.mean(out)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(_embed_params('s'), _embed_params('t'))
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf)) and float(jnp.abs(leaf).max()) > 0


def test_update_memory_has_no_gradient():
  v_s = EMBED.apply(_embed_params('s'), X['s_feat1'])
  v_t = EMBED.apply(_embed_params('t'), X['t_feat1'])
  g = jax.grad(lambda a, b: jnp.sum(contrast.update_memory(_memory0(), a, b, X['y1'])['student']),
               argnums=(0, 1))(v_s, v_t)
  for leaf in g:
    np.testing.assert_array_equal(leaf, np.zeros_like(leaf))


def test_check_grads_of_crd_wrt_scores():
  # Scores away from 0: real ones go down to ~1e-9, below any finite-difference step.
  r = np.random.default_rng(5)
  s, t = (jnp.asarray(0.05 + r.random((B, K + 1)), jnp.float32) for _ in range(2))
  check_grads(lambda s, t: jnp.mean(losses.crd(s, t, num_data=N)), (s, t), order=1, modes=('rev',),
              atol=2e-2, rtol=2e-2)


# ----------------------------------------------------------------------------------------------
# The loss on its own.
# ----------------------------------------------------------------------------------------------

def test_crd_hand_computed():
  # K = 1, N = 2: K·Pn = 1/2, so each side gives −log(1/1.5) − log(0.5/1.5) = log 1.5 + log 3.
  x = jnp.array([[1.0, 1.0]])
  expected = 2 * (math.log(1.5 + 1e-7) + math.log((1.5 + 1e-7) / 0.5))
  np.testing.assert_allclose(losses.crd(x, x, num_data=2.0), [expected], rtol=1e-6)


def test_crd_eps_placement():
  """eps is added to the denominators only. With scores, K·Pn and eps all 1e-7 each ratio is 1/3 (it
  would be 1/2 without eps, or 2/3 with eps in the numerators too); elsewhere eps is invisible."""
  x = jnp.array([[1e-7, 1e-7]])
  np.testing.assert_allclose(losses.crd(x, x, num_data=1e7), [4 * math.log(3.0)], rtol=1e-5)
  np.testing.assert_allclose(losses.crd(x, x, num_data=1e7, eps=0.0), [4 * math.log(2.0)], rtol=1e-5)


def test_crd_num_data_python_or_array_scalar():
  ref = reference_run()[0]
  s, t = jnp.asarray(ref['student_scores']), jnp.asarray(ref['teacher_scores'])
  scalar = losses.crd(s, t, num_data=N)
  np.testing.assert_allclose(losses.crd(s, t, num_data=float(N)), scalar, rtol=1e-7)
  np.testing.assert_allclose(losses.crd(s, t, num_data=jnp.asarray(N)), scalar, rtol=1e-7)


def test_crd_rejects_bad_shapes():
  s = jnp.ones([B, K + 1])
  with pytest.raises(errors.ConfigError, match='K\\+1'):
    losses.crd(s, jnp.ones([B, K]), num_data=N)
  with pytest.raises(errors.ConfigError, match='K\\+1'):
    losses.crd(jnp.ones([B, 1]), jnp.ones([B, 1]), num_data=N)
  with pytest.raises(errors.ConfigError, match='num_data'):
    losses.crd(s, s, num_data=jnp.full([B + 1], N))
  with pytest.raises(errors.ConfigError, match='feat_dim'):
    contrast.contrast_scores(_memory0(), jnp.ones([B, D + 1]), jnp.ones([B, D + 1]), X['idx1'])


def test_registered_with_its_roles():
  loss_def = losses.get('crd')
  assert loss_def.fn is losses.crd is contrast.crd
  assert loss_def.roles == ('crd_student_scores', 'crd_teacher_scores')
  # num_data has no default: it is a run value the trainer fills (compose(run_values=...)).
  assert loss_def.hyperparameters == {'num_data': inspect.Parameter.empty, 'eps': 1e-7}


# ----------------------------------------------------------------------------------------------
# Invariances and equivariances that hold exactly (up to float rounding).
# ----------------------------------------------------------------------------------------------

def test_crd_invariant_to_the_order_of_the_negatives():
  ref = reference_run()[0]
  s, t = ref['student_scores'], ref['teacher_scores']
  perm = np.concatenate([[0], 1 + np.random.default_rng(1).permutation(K)])
  np.testing.assert_allclose(losses.crd(s[:, perm], t[:, perm], num_data=N), losses.crd(s, t, num_data=N),
                             rtol=1e-6, atol=1e-7)


def test_step_equivariant_to_permuting_the_batch():
  """Z is a mean over the whole batch, so reordering the batch only reorders the outputs."""
  perm = np.array([2, 0, 3, 1])
  args = lambda p: (_embed_params('s'), _embed_params('t'), _memory0(), X['s_feat1'][p],
                    X['t_feat1'][p], X['y1'][p], X['idx1'][p])
  base = jax.jit(crd_step)(*args(np.arange(B)))
  permuted = jax.jit(crd_step)(*args(perm))
  for i in range(3):
    np.testing.assert_allclose(permuted[i], base[i][perm], rtol=RTOL, atol=1e-7)
  for key in base[3]:
    np.testing.assert_allclose(permuted[3][key], base[3][key], rtol=RTOL, atol=1e-7, err_msg=key)


def test_invariant_to_a_common_rotation_of_embeddings_and_memory():
  """Only inner products enter the scores: rotating banks and embeddings together changes nothing,
  and the memory update is rotated along (normalisation commutes with an orthogonal map)."""
  q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((D, D)))
  q = q.astype(np.float32)
  v_s = EMBED.apply(_embed_params('s'), X['s_feat1'])
  v_t = EMBED.apply(_embed_params('t'), X['t_feat1'])
  memory = _memory0()
  rotated = {**memory, 'student': memory['student'] @ q, 'teacher': memory['teacher'] @ q}
  base = contrast.contrast_scores(memory, v_s, v_t, X['idx1'])
  turned = contrast.contrast_scores(rotated, v_s @ q, v_t @ q, X['idx1'])
  for a, b in zip(base[:2], turned[:2]):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(losses.crd(*turned[:2], num_data=N), losses.crd(*base[:2], num_data=N), rtol=1e-5)
  up_base = contrast.update_memory(memory, v_s, v_t, X['y1'])
  up_turned = contrast.update_memory(rotated, v_s @ q, v_t @ q, X['y1'])
  np.testing.assert_allclose(up_turned['student'], up_base['student'] @ q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Memory set-up, sampling and config checks.
# ----------------------------------------------------------------------------------------------

def test_init_memory():
  memory = contrast.init_memory(jax.random.key(0), N, D)
  stdv = 1.0 / math.sqrt(D / 3)
  assert set(memory) == {'student', 'teacher', 'z_student', 'z_teacher'}
  for bank in ('student', 'teacher'):
    assert memory[bank].shape == (N, D) and memory[bank].dtype == jnp.float32
    assert float(memory[bank].min()) >= -stdv and float(memory[bank].max()) <= stdv
  assert not np.array_equal(memory['student'], memory['teacher'])
  for z in ('z_student', 'z_teacher'):
    assert memory[z].shape == () and float(memory[z]) == -1.0


@pytest.mark.parametrize('num_data, feat_dim, field', [(1, D, 'num_data'), (N, 0, 'feat_dim')])
def test_init_memory_rejects_bad_sizes(num_data, feat_dim, field):
  with pytest.raises(errors.ConfigError, match=field):
    contrast.init_memory(jax.random.key(0), num_data, feat_dim)


def test_sample_indices():
  positive = jnp.asarray(X['y1'])
  idx = jax.jit(contrast.sample_indices, static_argnums=(2, 3))(jax.random.key(3), positive, 50, N)
  assert idx.shape == (B, 51) and idx.dtype == jnp.int32
  np.testing.assert_array_equal(idx[:, 0], positive)
  assert int(idx.min()) >= 0 and int(idx.max()) < N
  assert len(np.unique(np.asarray(idx[:, 1:]))) > N // 2  # drawn over the whole memory
  other = contrast.sample_indices(jax.random.key(4), positive, 50, N)
  assert not np.array_equal(idx[:, 1:], other[:, 1:])


def test_check_num_negatives():
  contrast.check_num_negatives(N - 1, N)
  with pytest.raises(errors.ConfigError, match=r'num_negatives=20 >= .*larger than the dataset'):
    contrast.check_num_negatives(N, N)
  with pytest.raises(errors.ConfigError, match='my.field'):
    contrast.check_num_negatives(16384, 500, field='my.field')
  with pytest.raises(errors.ConfigError, match=r'num_negatives=0'):
    contrast.check_num_negatives(0, N)


if __name__ == '__main__':
  os.makedirs(os.path.dirname(DATA), exist_ok=True)
  write_inputs()
  print(f'wrote {DATA}')


def test_other_class_negatives_never_share_the_anchor_class_and_cover_the_rest():
  labels = np.array([0, 1, 2, 0, 1, 2, 2, 0, 1, 1], np.int32)
  table = contrast.class_table(labels)
  positive = jnp.array([0, 1, 2, 9], jnp.int32)
  idx = np.asarray(jax.jit(contrast.sample_other_class_indices, static_argnums=3)(
      jax.random.key(0), positive, table, 4000))
  np.testing.assert_array_equal(idx[:, 0], positive)
  for row, anchor in zip(idx, np.asarray(positive)):
    negatives = row[1:]
    assert np.all(labels[negatives] != labels[anchor])
    # Uniform over the other-class records: each appears, with frequency ≈ 1 / (N − n_y).
    others = np.flatnonzero(labels != labels[anchor])
    freq = np.bincount(negatives, minlength=len(labels))[others] / len(negatives)
    np.testing.assert_allclose(freq, 1.0 / len(others), atol=0.03)


def test_class_table_rejects_missing_labels():
  with pytest.raises(errors.ConfigError, match='uniform negatives'):
    contrast.class_table(np.array([], np.int32))
