"""User-facing errors: one clear message naming the problem and the fix.

`launch.py` prints the message of any `KDError` on one line and exits non-zero; tests assert on it.
"""
import signal


class KDError(Exception):
  """Base class for errors a user can cause (configs, paths, shapes, checkpoints, datasets)."""
  exit_code = 2


class ConfigError(KDError, ValueError):
  """A config field has a bad value (unknown name, missing hyperparameter, incompatible shapes)."""


class CheckpointError(KDError):
  """A checkpoint is missing, of the wrong kind, or does not match the model config."""


class DatasetUnavailableError(KDError):
  """A dataset cannot be read or built here; the message says how to get it."""


class DivergedError(KDError):
  """Training produced a non-finite loss, gradient or state; nothing non-finite was saved."""
  exit_code = 3


class Preempted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint at `step` was written and the run stopped cleanly.

  Not a `KDError`: nothing is wrong. launch.py exits with `exit_code` = 128 + the signal number (143
  for SIGTERM, 130 for SIGINT), the code a scheduler expects from a terminated job.
  """

  def __init__(self, signum: int, step: int):
    super().__init__(f'preempted ({signal.Signals(signum).name}) at step {step}: checkpoint saved; '
                     'rerun the same command to resume')
    self.step = step
    self.exit_code = 128 + signum
