"""Run identity: the config fields that define a run, stored in its workdir and with its checkpoints.

A workdir belongs to one run. Resuming it under a config that differs in any defining field is
refused with the fields that differ (before anything in the workdir is written), so a different
run can never "resume" another's checkpoints and overwrite its `summary.json` or images.

Fields a resume may change (they do not change what a step computes): `total_steps` (raise it to
extend a finished run — with a schedule that decays over `total_steps` the extended run then differs
from one configured that long from the start), the logging/evaluation/checkpoint cadence, and where
the data lives (`data.data_dir`, `data.cache_in_memory`), and the batch images/s is timed on.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections

from kd_jax import config_utils, errors

FILE = 'run_config.json'
_UNSET = '<unset>'  # shown for a field one side lacks
RESUMABLE = frozenset({'total_steps', 'log_every', 'eval_every', 'checkpoint_every',
                       'keep_checkpoints', 'data.data_dir', 'data.cache_in_memory',
                       'mesh.model', 'teacher_cache.dir', 'eval.throughput_batch'})


# Fields added after runs were recorded, with the value that keeps those runs' behaviour: a record
# without the field matches a config holding that value (so a new kd_jax resumes and packs old runs).
ADDED_DEFAULTS = {
    'compute_dtype': 'float32', 'data.test_split': '', 'teacher_cache.mode': 'off',
    'teacher_cache.copies': 4, 'teacher_cache.seed': 0, 'dmd.fake_updates': 5,
    'dmd.fake_learning_rate': 0.0, 'dmd.min_position': 0.02, 'dmd.max_position': 0.98,
    # autoencoder runs before paired image-to-image targets and their FID
    'target.kind': 'identity', 'eval.classifier_checkpoint': '', 'eval.feature_layer': 'features',
    'eval.feature_fn': '',
    # generator-distillation runs before the student EMA and lazy R1
    'ema_decay': 0.0, 'adversarial.r1_every': 1,
    # ... and before the adversarial D could start from the teacher's
    'adversarial.init_from': '', 'adversarial.fresh_latents': False,
    # Fashion-MNIST student configs before they spelled out the small CNN's depth
    'model.convs_per_stage': 1,
}


def of_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The defining fields as flat, JSON-plain `{'dotted.field': value}` (tuples become lists)."""
  flat = config_utils.flatten(config)
  plain = json.loads(json.dumps(flat, default=str, sort_keys=True))
  return {k: v for k, v in plain.items() if k not in RESUMABLE}


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """`config.<field>: <saved> in the run, <current> now` for every field that differs."""
  out = []
  for key in sorted(set(saved) | set(current)):
    if key in RESUMABLE:
      continue
    a, b = saved.get(key, _UNSET), current.get(key, _UNSET)
    if key in ADDED_DEFAULTS and _UNSET in (a, b) and ADDED_DEFAULTS[key] in (a, b):
      continue  # a record from before the field existed, and the field at its old behaviour
    if a != b:
      out.append(f'config.{key}: {_short(a)} in the run, {_short(b)} now')
  return out


def refuse_if_different(saved: Mapping[str, Any] | None, current: Mapping[str, Any],
                        where: str) -> None:
  """CheckpointError naming the differing fields when `saved` (None: unknown) differs."""
  if saved is None:
    return
  diff = differences(saved, current)
  if diff:
    shown = '; '.join(diff[:4]) + (f'; and {len(diff) - 4} more' if len(diff) > 4 else '')
    raise errors.CheckpointError(
        f'{where} belongs to a different run ({shown}); use a new --workdir, or the same config to '
        'resume it (only total_steps and the log/eval/checkpoint cadence may change). Nothing in it '
        'was changed.')


def check_workdir(workdir: str, current: Mapping[str, Any]) -> None:
  """Refuses a workdir whose recorded run differs from `current`; a workdir without a record passes."""
  refuse_if_different(read(workdir), current, f'--workdir={workdir!r}')


def read(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.CheckpointError(
        f'{path} is unreadable ({e}); it records which run owns this workdir: restore it or use a '
        'new --workdir.') from None
  return saved.get('identity') if isinstance(saved, dict) else None


def record(workdir: str, current: Mapping[str, Any]) -> None:
  """Writes the record once (atomically: a kill mid-write leaves no half file)."""
  path = os.path.join(workdir, FILE)
  if os.path.exists(path):
    return
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump({'identity': dict(current), 'resumable': sorted(RESUMABLE)}, f, indent=1,
              sort_keys=True)
  os.replace(tmp, path)


def _short(value: Any) -> str:
  text = value if value is _UNSET else repr(value) if isinstance(value, str) else json.dumps(value)
  return text if len(text) <= 60 else text[:57] + '...'
