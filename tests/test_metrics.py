"""Classification metrics (per-example, masked, jit-safe) and model cost (params, FLOPs)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.metrics import classification as cls_metrics
from kd_jax.metrics import cost

LOGITS = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 5.0], [4.0, 0.0, 0.0]])
LABELS = jnp.array([0, 2, 2, 1])
TEACHER = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


def test_top1_correct_per_example_and_masked():
  np.testing.assert_array_equal(cls_metrics.top1_correct(LOGITS, LABELS), [1, 0, 1, 0])
  mask = jnp.array([True, True, True, False])
  out = cls_metrics.top1_correct(LOGITS, LABELS, mask)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, [1, 0, 1, 0])
  np.testing.assert_array_equal(cls_metrics.top1_correct(LOGITS, LABELS, jnp.array([0, 1, 0, 1])),
                                [0, 0, 0, 0])


def test_agreement_ignores_labels_and_matches_under_jit():
  eager = cls_metrics.agreement(LOGITS, TEACHER)
  np.testing.assert_array_equal(eager, [1, 1, 0, 1])
  jitted = jax.jit(cls_metrics.agreement)(LOGITS, TEACHER, jnp.array([1, 1, 1, 0]))
  np.testing.assert_array_equal(jitted, [1, 1, 0, 0])


def test_param_count_counts_every_leaf():
  params = {'a': jnp.zeros((3, 4)), 'b': {'c': np.zeros(5), 'd': jnp.zeros(())}}
  assert cost.param_count(params) == 12 + 5 + 1
  variables = nn.Dense(7).init(jax.random.key(0), jnp.zeros((1, 5)))
  assert cost.param_count(variables['params']) == 5 * 7 + 7


def test_flops_of_a_matmul_scale_with_batch():
  w = jnp.ones((64, 32))
  fn = lambda w, x: x @ w
  one = cost.flops(fn, w, jnp.ones((1, 64)))
  assert one == pytest.approx(2 * 64 * 32)  # one multiply-add = 2 FLOPs
  assert cost.flops(fn, w, jnp.ones((4, 64))) == pytest.approx(4 * one)


def test_flops_accepts_every_cost_analysis_shape():
  assert cost._flops_of({'flops': 10.0}) == 10.0
  assert cost._flops_of([{'flops': 10.0}, {'flops': 5.0}]) == 15.0
  assert np.isnan(cost._flops_of(None))
  assert np.isnan(cost._flops_of([{'bytes accessed': 1.0}]))


def test_throughput_runs_and_scales_by_items_per_call():
  # Only that it runs and returns a positive rate: wall-clock values are never asserted.
  rate = cost.throughput(lambda x: x * 2, jnp.ones(4), n_iters=2, warmup=1, items_per_call=4)
  assert np.isfinite(rate) and rate > 0
  with pytest.raises(ValueError, match='n_iters'):
    cost.throughput(lambda x: x, jnp.ones(1), n_iters=0)
