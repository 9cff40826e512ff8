"""The config boundary: field checks, and naming the config field in errors raised below it.

Trainers read the config here, once; `models`, `losses`, `data`, `metrics` and `parallel` take plain
values and word their errors by argument. `field_context` puts the config field in front:

    with config_utils.field_context('config.data.batch_size'):
      parallel.check_global_batch(config.data.batch_size, mesh)
"""
from __future__ import annotations

import contextlib
import difflib
from typing import Any, Iterator

import flax.linen as nn
import ml_collections

from kd_jax import errors, models

# Fields whose contents are free-form (validated by the component that consumes them).
FREE_FORM = frozenset({'model', 'losses', 'kwargs', 'stages', 'teachers', 'generator',
                       'discriminator', 'classifier', 'student', 'feature_extractor'})


def check_fields(config: Any, defaults: ml_collections.ConfigDict, prefix: str = 'config') -> None:
  """Raises ConfigError on the first field of `config` that `defaults` does not have."""
  for key in config.keys():
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
      hint = f"did you mean '{prefix}.{close[0]}'?" if close else (
          f"known fields: {', '.join(sorted(defaults.keys()))}")
      raise errors.ConfigError(f"unknown config field '{prefix}.{key}'; {hint}")
    value, default = config[key], defaults[key]
    if (key not in FREE_FORM and isinstance(value, (ml_collections.ConfigDict, dict))
        and isinstance(default, (ml_collections.ConfigDict, dict))):
      check_fields(value, default, f'{prefix}.{key}')


def to_dict(value: Any) -> Any:
  """ConfigDict/FrozenConfigDict → plain dicts/lists (for JSON and for **kwargs)."""
  if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    return {k: to_dict(v) for k, v in value.items()}
  if isinstance(value, dict):
    return {k: to_dict(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(to_dict(v) for v in value)
  return value


def model_kwargs(model_cfg: Any, field: str) -> tuple[str, dict[str, Any]]:
  """Splits a `{'name': ..., **kwargs}` model config into (name, kwargs)."""
  cfg = to_dict(model_cfg)
  if not isinstance(cfg, dict) or 'name' not in cfg:
    raise errors.ConfigError(f"{field} must be a dict with a 'name' (e.g. {{'name': 'resnet20', "
                             "'num_classes': 10}).")
  cfg = dict(cfg)
  return cfg.pop('name'), cfg


@contextlib.contextmanager
def field_context(field: str) -> Iterator[None]:
  """Re-raises a `KDError` from inside as the same type with message `'<field>: <message>'`.

  The code below the boundary names its argument and the fix; this adds which config field held the
  value, e.g. "config.data.batch_size: global batch size 130 is not divisible by the 8 devices ...".
  """
  try:
    yield
  except errors.KDError as e:
    raise type(e)(f'{field}: {e}') from None


def build_model(model_cfg: Any, field: str) -> nn.Module:
  """The module a `{'name': ..., **kwargs}` model config at `field` describes (see `models.get`).

  Raises:
    ConfigError: not a dict with a 'name', or anything `models.get` rejects, prefixed with `field`.
  """
  name, kwargs = model_kwargs(model_cfg, field)
  with field_context(field):
    return models.get(name, **kwargs)


def set_dotted(config: Any, dotted: str, value: Any) -> None:
  """`set_dotted(c, 'teacher.checkpoint', v)` sets c.teacher.checkpoint = v."""
  *path, last = dotted.split('.')
  for part in path:
    config = config[part]
  config[last] = value


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports a config file the way `config_flags` does and returns `get_config(arg)`.

  The repository root goes on sys.path first: configs import `configs.<dataset>.common`.
  """
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if repo not in sys.path:
    sys.path.insert(0, repo)
  path = path if os.path.isabs(path) else os.path.join(repo, path)
  spec = importlib.util.spec_from_file_location(f'kd_jax_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()
