"""User-facing errors: one clear message naming the problem and the fix.

`launch.py` prints the message of any `KDError` on one line and exits non-zero; tests assert on it.
"""


class KDError(Exception):
  """Base class for errors a user can cause (configs, paths, shapes, checkpoints, datasets)."""


class ConfigError(KDError, ValueError):
  """A config field has a bad value (unknown name, missing hyperparameter, incompatible shapes)."""


class CheckpointError(KDError):
  """A checkpoint is missing, of the wrong kind, or does not match the model config."""


class DatasetUnavailableError(KDError):
  """A dataset cannot be read or built here; the message says how to get it."""
