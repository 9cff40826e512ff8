"""Model cost: parameter count, XLA-estimated FLOPs per forward pass, and measured throughput.

FLOPs come from XLA's cost analysis of the compiled computation, so they count what actually runs
(after fusion), not a hand-derived formula per layer.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import numpy as np

from kd_jax.types import PyTree


def param_count(params: PyTree) -> int:
  """Total number of scalars in all array leaves of `params` (e.g. a Flax `params` collection)."""
  return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


def _flops_of(analysis: Any) -> float:
  # JAX has returned a dict, a list with one dict per computation, or None across versions.
  if analysis is None:
    return float('nan')
  if isinstance(analysis, dict):
    return float(analysis.get('flops', float('nan')))
  values = [_flops_of(a) for a in analysis]
  finite = [v for v in values if not math.isnan(v)]
  return float(sum(finite)) if finite else float('nan')


def flops(fn: Callable[..., Any], *example_args: Any) -> float:
  """FLOPs of ONE call `fn(*example_args)`, as estimated by XLA after compilation.

  The count is for the whole call at the batch size of `example_args`: pass a batch of 1 to get
  FLOPs per example (what kd_jax reports as `flops_per_example`), or divide by the batch size.
  A multiply-add counts as 2 FLOPs. Returns NaN when the backend gives no estimate.
  """
  compiled = jax.jit(fn).lower(*example_args).compile()
  try:
    return _flops_of(compiled.cost_analysis())
  except NotImplementedError:
    return float('nan')


def throughput(fn: Callable[..., Any], *args: Any, n_iters: int = 10, warmup: int = 2,
               items_per_call: int = 1) -> float:
  """Measured calls per second of `jax.jit(fn)(*args)`, times `items_per_call`.

  With the default `items_per_call=1` this is calls/s; pass the batch size to get items/s.
  Compilation and `warmup` calls are excluded; every call is waited for with `block_until_ready`
  (JAX dispatches asynchronously). For benchmarks and reports only: wall-clock numbers depend on
  the machine and its load, so tests must never assert on them.
  """
  if n_iters < 1:
    raise ValueError(f'n_iters must be >= 1, got {n_iters}.')
  jitted = jax.jit(fn)
  for _ in range(max(warmup, 1)):  # At least one call, so compilation is never timed.
    jax.block_until_ready(jitted(*args))
  start = time.perf_counter()
  for _ in range(n_iters):
    jax.block_until_ready(jitted(*args))
  elapsed = time.perf_counter() - start
  return n_iters * items_per_call / elapsed
