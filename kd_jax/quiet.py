"""Quiet, friendly logs by default: one progress line per log period and kd_jax's own messages.

Hidden unless `--verbosity` is given (then everything shows, as absl would):
  - INFO lines of orbax/clu/TFDS (absl verbosity WARNING);
  - known harmless WARNINGs: orbax's "Metadata file does not exist" (older exports carry no
    metadata file) and "Waiting for previous save to complete" (an asynchronous save still
    running), TFDS's "OpenCV is not installed" (PIL decodes the PNGs) and "Variant folder ... has
    no dataset_info.json" (logged while kd_jax builds the dataset for the first time);
  - TensorFlow's and oneDNN's C++ start-up lines (TF_CPP_MIN_LOG_LEVEL=2, set before TensorFlow is
    imported) and scipy's LinAlgWarning from a singular covariance in tiny FID samples.
"""
from __future__ import annotations

import logging as py_logging
import os
import re
import warnings

from absl import logging

NOISE = (
    re.compile(r'Metadata file does not exist'),
    re.compile(r'Waiting for previous save to complete'),
    re.compile(r'OpenCV is not installed'),
    re.compile(r'Variant folder .* has no dataset_info\.json'),
)


class _DropNoise(py_logging.Filter):
  def filter(self, record: py_logging.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return True
    return not any(p.search(message) for p in NOISE)


_FILTER = _DropNoise()


def environment() -> None:
  """Set before TensorFlow is imported (it reads them once): hide its C++ INFO/WARNING lines."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # Its oneDNN notice (on CPUs with oneDNN ops) bypasses TF_CPP_MIN_LOG_LEVEL; TF computes nothing
  # here (input and TensorBoard only) and JAX/XLA does not read this variable.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


def install(verbose: bool) -> None:
  """Quiet logs unless `verbose` (the user passed --verbosity)."""
  if verbose:
    return
  environment()
  logging.set_verbosity(logging.WARNING)
  handler = logging.get_absl_handler()
  if _FILTER not in handler.filters:
    handler.addFilter(_FILTER)
  py_logging.getLogger().addFilter(_FILTER)
  # TFDS draws tqdm bars (a dozen redrawn lines) while it builds a dataset; kd_jax prints one line.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  tfds.disable_progress_bar()
  try:
    from scipy.linalg import LinAlgWarning  # pylint: disable=import-outside-toplevel
    warnings.filterwarnings('ignore', category=LinAlgWarning)
  except ImportError:
    pass
