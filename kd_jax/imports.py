"""User code by import path: 'pkg.module:Name' names a model class or a loss outside kd_jax.

    resolve('my_project.models:TinyNet')        # the class
    resolve('my_project.losses:Mine.loss')      # a dotted attribute after the colon

Put the package's folder on PYTHONPATH (or sys.path). Every failure is one ConfigError line that
names the module, the attribute and, where Python raised, the original exception.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any

from kd_jax import errors

_FORM = "an import path 'pkg.module:Name' (e.g. 'my_project.models:TinyNet')"


def is_import_path(name: Any) -> bool:
  """True when `name` is written as an import path ('module:attribute') rather than a registry name."""
  return isinstance(name, str) and ':' in name


def resolve(spec: str) -> Any:
  """The object `spec` = 'pkg.module:Attr[.sub]' names: imports the module, then reads the attribute.

  Raises:
    ConfigError: `spec` is malformed, the module is not found, importing it raised, or it has no such
      attribute — one line naming the module, the attribute and the original exception.
  """
  if not is_import_path(spec) or spec.count(':') != 1:
    raise errors.ConfigError(f'{spec!r} is not {_FORM}.')
  module_name, attr = (part.strip() for part in spec.split(':'))
  if not module_name or not attr or '' in attr.split('.'):
    raise errors.ConfigError(f'{spec!r} is not {_FORM}; give both the module and the name.')
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    missing = e.name or ''
    if module_name == missing or module_name.startswith(missing + '.'):
      raise errors.ConfigError(
          f"import path {spec!r}: no module named {missing!r} ({_describe(e)}); put the folder that "
          f"holds '{module_name.split('.')[0]}' on PYTHONPATH, or fix the module name.") from None
    raise _import_failed(spec, module_name, e) from None  # the module imports something missing
  except Exception as e:  # pylint: disable=broad-except
    # Any error in the user's module (syntax, a failing top-level statement) lands here.
    raise _import_failed(spec, module_name, e) from None
  obj: Any = module
  done = module_name
  for part in attr.split('.'):
    try:
      obj = getattr(obj, part)
    except AttributeError as e:
      names = [n for n in dir(obj) if not n.startswith('_')]
      close = difflib.get_close_matches(part, names, n=1)
      hint = f"did you mean '{close[0]}'? " if close else ''
      raise errors.ConfigError(
          f"import path {spec!r}: {done!r} has no attribute {part!r} ({_describe(e)}); {hint}"
          f"define {attr!r} in module {module_name!r} or fix the name.") from None
    done = f'{done}:{part}' if done == module_name else f'{done}.{part}'
  return obj


def _import_failed(spec: str, module_name: str, e: BaseException) -> errors.ConfigError:
  return errors.ConfigError(f'import path {spec!r}: importing module {module_name!r} failed '
                            f'({_describe(e)}); fix that module so that it imports.')


def _describe(e: BaseException) -> str:
  """'Type: first line of the message' — kept to one line so the whole error stays one line."""
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else 'no message'}"
