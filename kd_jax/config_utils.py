"""The config boundary: field checks, and naming the config field in errors raised below it.

Trainers read the config here, once; `models`, `losses`, `data`, `metrics` and `parallel` take plain
values and word their errors by argument. `field_context` puts the config field in front:

    with config_utils.field_context('config.data.batch_size'):
      parallel.check_global_batch(config.data.batch_size, mesh)
"""
from __future__ import annotations

import contextlib
import difflib
import os
from typing import Any, Iterator

import flax.linen as nn
import ml_collections
import numpy as np

from kd_jax import errors, models

# Fields whose contents are free-form (validated by the component that consumes them).
FREE_FORM = frozenset({'model', 'losses', 'kwargs', 'stages', 'teachers', 'generator',
                       'discriminator', 'classifier', 'student', 'feature_extractor'})


def check_fields(config: Any, defaults: ml_collections.ConfigDict, prefix: str = 'config') -> None:
  """Raises ConfigError on the first field of `config` that `defaults` lacks or whose type differs.

  A leaf's type is the default's: an int where the default is an int (not a bool, not '32'), a float
  or an int where it is a float, a bool where it is a bool, a str where it is a str, a list or tuple
  where it is one, a group of fields where it is one. Fields in `FREE_FORM` are checked by the
  component that reads them.
  """
  for key in config.keys():
    if key not in defaults:
      raise errors.ConfigError(f"unknown config field '{prefix}.{key}'; "
                               f"{_closest(key, defaults.keys(), prefix, quote=True)}")
    value, default = config[key], defaults[key]
    if key in FREE_FORM:
      continue
    if isinstance(default, (ml_collections.ConfigDict, dict)):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise errors.ConfigError(
            f'{prefix}.{key}={value!r} must be a group of fields ({", ".join(sorted(default))}), '
            f'not a {type(value).__name__}; set its fields instead, e.g. '
            f'{prefix}.{key}.{sorted(default)[0] if default else "<name>"}=...')
      check_fields(value, default, f'{prefix}.{key}')
    else:
      check_type(value, default, f'{prefix}.{key}')


# Fields that may also be None (documented meaning: "decide automatically").
NULLABLE = frozenset({'cache_in_memory'})


def _closest(key: str, known: Any, prefix: str, quote: bool = False) -> str:
  """'did you mean <prefix>.<closest>?', or the known fields when none is close."""
  known = sorted(known)
  close = difflib.get_close_matches(key, known, n=1)
  if close:
    return f"did you mean '{prefix}.{close[0]}'?" if quote else f'did you mean {prefix}.{close[0]}?'
  if not known:
    return f'{prefix.lstrip("-")} has no fields'
  return (f"known fields: {', '.join(known)}" if quote else
          f"fields of {prefix.lstrip('-')}: {', '.join(known)}")


def check_type(value: Any, default: Any, field: str) -> None:
  """Raises ConfigError when `value` is not of the type of `default` (see `check_fields`)."""
  if default is None or (value is None and field.rsplit('.', 1)[-1] in NULLABLE):
    return
  expected, ok = _expected_type(default, value)
  if not ok:
    raise errors.ConfigError(
        f'{field}={value!r} is {_a(type(value).__name__)}, but it must be {expected} '
        f'(the default is {default!r}); set it to {expected}, e.g. {field}={default!r}.')


def _expected_type(default: Any, value: Any) -> tuple[str, bool]:
  is_bool = isinstance(value, (bool, np.bool_))
  is_int = isinstance(value, (int, np.integer)) and not is_bool
  if isinstance(default, bool):
    return 'a bool (True or False)', is_bool
  if isinstance(default, int):
    return 'an int', is_int
  if isinstance(default, float):
    return 'a number (float or int)', is_int or (isinstance(value, (float, np.floating)))
  if isinstance(default, str):
    return 'a str', isinstance(value, str)
  if isinstance(default, (list, tuple)):
    return 'a list', isinstance(value, (list, tuple))
  return _a(type(default).__name__), True


def _a(noun: str) -> str:
  return f"an {noun}" if noun[:1] in 'aeiou' else f'a {noun}'


def flatten(config: Any, prefix: str = '') -> dict[str, Any]:
  """`{'dotted.field': leaf}` of a (nested) ConfigDict; an empty group is a leaf."""
  out: dict[str, Any] = {}
  for k, v in config.items():
    if isinstance(v, (ml_collections.ConfigDict, dict)) and v:
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def check_count(value: Any, field: str, *, low: int | None = 1, meaning: str = '') -> None:
  """ConfigError unless `value` is an integer (not a bool) and, with `low`, at least `low`."""
  is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
  if not is_int or (low is not None and value < low):
    what = ('an integer' if low is None else 'a positive integer' if low == 1 else
            f'an integer >= {low}')
    raise errors.ConfigError(f'{field}={value!r} must be {what}'
                             f'{f" ({meaning})" if meaning else ""}.')


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


def check_override(config: Any, dotted: str, raw: str | None = None) -> None:
  """Checks a command-line `--config.<dotted>=<raw>` against the loaded config, before it is applied.

  Raises:
    ConfigError: the field does not exist (with the closest field), a field on the way is a plain
      value, or `raw` does not parse as the field's type (int, float, bool).
  """
  node, done = config, 'config'
  for part in dotted.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      raise errors.ConfigError(
          f'--config.{dotted}: {done} is {_a(type(node).__name__)} ({node!r}), not a group of '
          f'fields; set --{done}=<value> instead.')
    if part not in node:
      raise errors.ConfigError(f'unknown config field --config.{dotted}; '
                               f'{_closest(part, node.keys(), "--" + done)}')
    node, done = node[part], f'{done}.{part}'
  if raw is None:
    return
  parse = {bool: _parse_bool, int: _parse_int, float: float}.get(type(node))
  if parse is None:
    return
  try:
    parse(raw.strip())
  except ValueError:
    expected = {bool: 'a bool (true or false)', int: 'an int', float: 'a number'}[type(node)]
    example = str(node).lower() if isinstance(node, bool) else repr(node)
    raise errors.ConfigError(f'--config.{dotted}={raw!r} is not {expected}; pass {expected}, e.g. '
                             f'--config.{dotted}={example}') from None


def _parse_int(raw: str) -> int:
  return int(raw, 0) if raw[:2].lower() in ('0x', '0o', '0b') else int(raw)


def _parse_bool(raw: str) -> bool:
  if raw.lower() in ('true', 't', '1'):
    return True
  if raw.lower() in ('false', 'f', '0'):
    return False
  raise ValueError(raw)


def load_config_file(path: str, arg: str | None = None, *, relative_to: str | None = None
                     ) -> ml_collections.ConfigDict:
  """Imports a config file the way `config_flags` does and returns `get_config(arg)`.

  A relative `path` is looked up in `relative_to` when given (launch.py: the working directory, as
  config_flags does), else in the working directory and then the repository root. The root goes on
  sys.path: configs import `configs.<dataset>.common`.

  Raises:
    ConfigError: one line naming the file and what is wrong: it is missing (with the nearest
      config files), it does not import (syntax error, failing import), it has no `get_config`,
      `get_config(arg)` raised (e.g. a `:variant` it does not have), or it returned no ConfigDict.
  """
  import importlib.util  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if repo not in sys.path:
    sys.path.insert(0, repo)
  spec_text = path if arg is None else f'{path}:{arg}'
  where = f'--config={spec_text}'
  if not path:
    raise errors.ConfigError('--config is empty; pass a config file, e.g. '
                             '--config=configs/fashion_mnist/teacher.py')
  if relative_to is not None:
    path = os.path.join(relative_to, path)
  elif not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(repo, path)
  if not os.path.exists(path):
    raise errors.ConfigError(f'{where}: no such file; {_nearby_configs(path, repo)}')
  if os.path.isdir(path):
    raise errors.ConfigError(f'{where}: is a directory; {_nearby_configs(path, repo)}')
  try:
    spec = importlib.util.spec_from_file_location(f'kd_jax_config_{abs(hash(path))}', path)
    if spec is None or spec.loader is None:
      raise errors.ConfigError(f'{where}: not a Python file; pass a .py config file.')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except errors.ConfigError:
    raise
  except SyntaxError as e:
    raise errors.ConfigError(f'{where}: {type(e).__name__} at line {e.lineno}: {e.msg}; fix the '
                             'config file.') from None
  except Exception as e:  # pylint: disable=broad-except
    raise errors.ConfigError(f'{where}: importing it raised {_one_line(e)}{_line_in(e, path)}; fix '
                             'the config file.') from None
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise errors.ConfigError(f'{where}: defines no get_config(); a config file defines '
                             'get_config(arg=None) returning an ml_collections.ConfigDict.')
  call = f'get_config({arg!r})' if arg is not None else 'get_config()'
  try:
    config = get_config(arg) if arg is not None else get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise errors.ConfigError(f'{where}: {call} raised {_one_line(e)}{_line_in(e, path)}'
                             f'{_variant_hint(e, arg, path)}') from None
  if isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.ConfigError(f'{where}: {call} returned {_a(type(config).__name__)}, not an '
                             'ml_collections.ConfigDict; return the config from get_config.')
  return config


def _one_line(e: BaseException, limit: int = 400) -> str:
  text = ' '.join(str(e).split()) or 'no message'
  text = text if len(text) <= limit else text[:limit] + '...'
  return f'{type(e).__name__}: {text}'


def _line_in(e: BaseException, path: str) -> str:
  """' (at <file>:<line>)' for the innermost frame in a config file (this one or one next to it)."""
  import traceback  # pylint: disable=import-outside-toplevel
  configs_dir = os.path.dirname(os.path.abspath(path))
  mine = [f for f in traceback.extract_tb(e.__traceback__)
          if os.path.dirname(os.path.abspath(f.filename)) == configs_dir]
  return f' (at {_show(mine[-1].filename)}:{mine[-1].lineno})' if mine else ''


def _show(path: str) -> str:
  """`path` relative to the repository root when inside it, else absolute."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.abspath(path)
  return os.path.relpath(path, repo) if path.startswith(repo + os.sep) else path


def _variant_hint(e: BaseException, arg: str | None, path: str) -> str:
  """A fix for the common case: a `:variant` the file does not take or does not know."""
  if arg is None:
    return '; fix the config file.'
  if isinstance(e, TypeError) and 'positional argument' in str(e):
    return f"; this config takes no ':variant', drop ':{arg}'."
  if arg and arg in str(e):
    return '' if 'use' in str(e) else f"; ':{arg}' is not a variant of this config file."
  return '; fix the config file or the :variant.'


def _nearby_configs(path: str, repo: str) -> str:
  """'did you mean <file>?' among the .py config files next to `path` (else in the repo's configs/)."""
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  if not os.path.isdir(directory):
    directory = os.path.join(repo, 'configs')
  found = sorted(os.path.join(root, f) for root, _, files in os.walk(directory) for f in files
                 if f.endswith('.py') and not f.startswith('_') and f != 'common.py')
  names = [os.path.basename(f) for f in found]
  close = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.6)
  if close and not os.path.isdir(path):
    return f'did you mean {_show(found[names.index(close[0])])}?'
  if found:
    shown = [os.path.relpath(f, directory) for f in found]
    more = f' (+{len(shown) - 20} more)' if len(shown) > 20 else ''
    return f"config files in {_show(directory)}/: {', '.join(shown[:20])}{more}"
  return 'pass a .py config file, e.g. configs/fashion_mnist/teacher.py'
