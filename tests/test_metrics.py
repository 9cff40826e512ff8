"""Classification metrics (per-example, masked, jit-safe) and model cost (params, FLOPs)."""
import types

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


def test_throughput_times_only_the_measured_calls(monkeypatch):
  """A fake clock that reads the number of finished calls: the rate is n_iters · items over the
  clock span of exactly the n_iters timed calls (compilation and warm-up outside it, each call
  waited for). No wall-clock value is asserted."""
  finished = []

  def count(x):
    finished.append(1)
    return x * 2

  # The output depends on the host callback, so a call is finished only once it has counted.
  fn = lambda x: jax.pure_callback(count, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
  # Each finished call "takes" 0.25 s on the clock `throughput` reads (only that module's clock).
  fake_time = types.SimpleNamespace(perf_counter=lambda: 0.25 * len(finished))
  monkeypatch.setattr(cost, 'time', fake_time)
  rate = cost.throughput(fn, jnp.ones(4), n_iters=6, warmup=3, items_per_call=4)
  assert len(finished) == 3 + 6
  assert rate == pytest.approx(6 * 4 / (6 * 0.25))
  finished.clear()
  # warmup=0 still makes one untimed call, so compilation is never timed.
  assert cost.throughput(fn, jnp.ones(4), n_iters=2, warmup=0) == pytest.approx(2 / 0.5)
  assert len(finished) == 1 + 2
  with pytest.raises(ValueError, match='n_iters'):
    cost.throughput(lambda x: x, jnp.ones(1), n_iters=0)
