"""Intermediate features of any Flax model by module path, without editing the model.

A path is the '/'-joined names of nested submodules, e.g. 'stage2', 'stage3/block1', 'block2/conv1';
the feature is that submodule's `__call__` output. Uses Flax's `capture_intermediates` with a filter
that keeps only the requested paths, so nothing else is stored; paths are Python strings fixed at
trace time, so this works under `jax.jit`.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from kd_jax import errors
from kd_jax.types import Array, PyTree

_CALL = '__call__'


def _lookup(tree: Mapping[str, Any], path: str) -> Any:
  node: Any = tree
  for part in path.split('/'):
    if not isinstance(node, Mapping) or part not in node:
      return None
    node = node[part]
  return node.get(_CALL) if isinstance(node, Mapping) else None


def feature_paths(module: nn.Module, variables: PyTree, x: Any, *, rngs: Any = None,
                  **call_kwargs: Any) -> list[str]:
  """Every capturable module path of `module(x, **call_kwargs)`, in call order, parents first.

  Only traced (`jax.eval_shape`), never compiled or run, so this is cheap, works under
  `jax.jit` and accepts abstract variables (e.g. from `jax.eval_shape(module.init, ...)`).
  Pass the same call arguments (`train=...`, `labels=...`) as for the real call.
  """
  finished: list[str] = []

  def record(mdl: nn.Module, method_name: str) -> bool:
    # The filter runs when each module call returns (children before parents); it only records.
    path = '/'.join(mdl.path)
    if method_name == _CALL and path and path not in finished:
      finished.append(path)
    return False

  # Variables and x go in as arguments so abstract ones (jax.ShapeDtypeStruct) work too.
  jax.eval_shape(lambda v, x: module.apply(v, x, rngs=rngs, mutable=True,
                                           capture_intermediates=record, **call_kwargs),
                 variables, x)
  present, ordered, added = set(finished), [], set()
  for path in finished:
    parts = path.split('/')
    for i in range(1, len(parts) + 1):
      prefix = '/'.join(parts[:i])
      if prefix in present and prefix not in added:
        ordered.append(prefix)
        added.add(prefix)
  return ordered


def _bad_path_error(module: nn.Module, bad: Sequence[str], valid: Sequence[str]
                    ) -> errors.ConfigError:
  lines = []
  for path in bad:
    close = difflib.get_close_matches(path, valid, n=4, cutoff=0.5)
    lines.append(f"{path!r}" + (f" (closest: {', '.join(close)})" if close else ''))
  # Whole-model lists can run to hundreds of paths; the top two levels are what people pick.
  top = [p for p in valid if p.count('/') <= 1]
  more = f' (+{len(valid) - len(top)} deeper ones)' if len(top) < len(valid) else ''
  return errors.ConfigError(
      f"feature path {', '.join(lines)} does not exist in {type(module).__name__}; valid paths: "
      f"{', '.join(top)}{more}. Name the layer by one of these paths; "
      'kd_jax.models.features.feature_paths lists them all.')


def apply_with_features(module: nn.Module, variables: PyTree, x: Any, paths: Sequence[str], *,
                        train: bool, mutable: Any = False, rngs: Any = None,
                        **call_kwargs: Any) -> tuple[Any, dict[str, Array], dict[str, PyTree]]:
  """Runs `module.apply(variables, x, train=train, **call_kwargs)` and captures features.

  Args:
    module: any Flax Linen module (classifier, generator, discriminator, autoencoder).
    variables: its variables ({'params': ..., 'batch_stats': ...}).
    x: the first positional argument of `__call__` (images or latents).
    paths: module paths to capture, e.g. ('stage2', 'stage3/block1'); may be empty.
    train: passed to `__call__` (BatchNorm batch statistics when True).
    mutable: collections the call may update, as for `Module.apply` (e.g. ['batch_stats']).
    rngs: e.g. {'noise': key} for StyleGAN2 noise or {'dropout': key}.
    **call_kwargs: further `__call__` arguments (e.g. labels=...).

  Returns:
    (outputs of `__call__`, {path: that submodule's output}, updated mutable collections —
    `{}` when nothing is mutable). A module called several times yields its first call's output.

  Raises:
    ConfigError: a path that is not a submodule of this model, naming the closest valid ones.
  """
  wanted = tuple(str(p).strip('/') for p in paths)
  wanted_set = frozenset(wanted)

  def keep(mdl: nn.Module, method_name: str) -> bool:
    return method_name == _CALL and '/'.join(mdl.path) in wanted_set

  if mutable is None or mutable is False:
    mutable = []
  elif isinstance(mutable, str):
    mutable = [mutable]
  elif mutable is not True:
    mutable = list(mutable)
  out, state = module.apply(variables, x, train=train, rngs=rngs, mutable=mutable,
                            capture_intermediates=keep if wanted else False, **call_kwargs)
  state = dict(state)
  captured = state.pop('intermediates', {})
  features, missing = {}, []
  for path in wanted:
    value = _lookup(captured, path)
    if value is None:
      missing.append(path)
    else:
      features[path] = value[0] if isinstance(value, (tuple, list)) else value
  if missing:
    valid = feature_paths(module, variables, x, rngs=rngs, train=train, **call_kwargs)
    raise _bad_path_error(module, missing, valid)
  return out, features, state
