"""Orbax checkpoints: training state + data iterator state + a student-only export.

Each saved step holds four items:
  `state`  — everything needed to resume (student + extras params, model state, optimizer, step, rng);
  `data`   — the grain iterator state (JSON) so the input resumes at the same example;
  `export` — only the exported models' variables (e.g. `{'model': {...}}` or `{'generator': ...}`);
             this is what a later run restores as its frozen teacher; extras never appear here;
  `meta`   — JSON: trainer, model configs of the exported roles, dataset, step.
Orbax writes multi-host checkpoints itself (every process calls `save`, the primary writes metadata).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from kd_jax import errors
from kd_jax.types import PyTree

CHECKPOINT_SUBDIR = 'checkpoints'


def checkpoint_dir(workdir: str) -> epath.Path:
  # Orbax's OCDBT storage needs absolute paths; users pass relative ones.
  return epath.Path(os.path.abspath(workdir)) / CHECKPOINT_SUBDIR


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` with the four items above."""

  def __init__(self, workdir: str, *, save_every: int, keep: int):
    self.directory = checkpoint_dir(workdir)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(save_interval_steps=max(1, save_every),
                                             max_to_keep=max(1, keep), create=True),
        item_names=('state', 'data', 'export', 'meta'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, *, state: PyTree, data_state: Mapping[str, Any] | None,
           export: PyTree, meta: Mapping[str, Any], force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(dict(data_state or {})),
        export=ocp.args.StandardSave(export),
        meta=ocp.args.JsonSave(dict(meta))), force=force)

  def restore(self, abstract_state: PyTree, step: int | None = None) -> tuple[PyTree, dict]:
    """Restores `state` into the shardings of `abstract_state` (a tree of ShapeDtypeStruct)."""
    step = self.latest_step() if step is None else step
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise errors.CheckpointError(
          f'the checkpoint at {self.directory}/{step} does not match this config ({_short(e)}); '
          'it belongs to a different run: use a new --workdir (the existing checkpoints were left '
          'untouched).') from e
    return restored['state'], dict(restored['data'] or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def find_checkpoint(path: str, field: str) -> tuple[epath.Path, int]:
  """Resolves a run's workdir or its `checkpoints/` dir (or a step dir) to (checkpoints dir, step)."""
  p = epath.Path(os.path.abspath(path))
  if not p.exists():
    raise errors.CheckpointError(
        f'{field}={path!r} does not exist; point it at the --workdir of a finished run '
        '(train the teacher first, see the README).')
  candidates = [p / CHECKPOINT_SUBDIR, p]
  for directory in candidates:
    if directory.is_dir():
      steps = ocp.utils.checkpoint_steps(directory)
      if steps:
        return directory, max(steps)
  if p.name.isdigit() and (p / 'export').exists():
    return p.parent, int(p.name)
  raise errors.CheckpointError(
      f'{field}={path!r} holds no kd_jax checkpoint (no {CHECKPOINT_SUBDIR}/<step>/export); point it '
      'at the --workdir of a finished kd_jax run.')


def read_meta(path: str, field: str) -> tuple[epath.Path, int, dict]:
  directory, step = find_checkpoint(path, field)
  meta_dir = directory / str(step) / 'meta'
  try:
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(meta_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.CheckpointError(
        f'{field}={path!r}: cannot read {meta_dir} ({_short(e)}); is it a kd_jax run?') from e
  return directory, step, meta


def restore_export(path: str, abstract_export: PyTree, field: str) -> PyTree:
  """Restores part of the `export` item of a run's latest step, checking shapes first.

  `abstract_export` names the roles to restore (e.g. `{'generator': <abstract variables>}`); other
  exported roles are left on disk. Every leaf's shape is compared before restoring, so a teacher
  model config that does not match its checkpoint is reported by name instead of as an orbax trace.
  """
  directory, step, _ = read_meta(path, field)
  export_dir = directory / str(step) / 'export'
  checkpointer = ocp.PyTreeCheckpointer()
  meta_tree = _tree_metadata(checkpointer, export_dir)
  want = _flatten(abstract_export)
  have = _flatten({k: v for k, v in meta_tree.items() if k in abstract_export})
  missing = sorted(set(want) - set(have))
  extra = sorted(set(have) - set(want))
  if missing or extra:
    raise errors.CheckpointError(
        f'{field}={path!r} does not match the teacher model config: parameters '
        f'{(missing or extra)[:3]} are {"missing from the checkpoint" if missing else "unexpected"}; '
        'set config.teacher.model to the model config the teacher was trained with.')
  for name, leaf in want.items():
    if tuple(have[name].shape) != tuple(leaf.shape):
      raise errors.CheckpointError(
          f'{field}={path!r} does not match the teacher model config: {name} has shape '
          f'{tuple(have[name].shape)} in the checkpoint but {tuple(leaf.shape)} in the model; set '
          'config.teacher.model to the model config the teacher was trained with.')
  restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_export)
  restored = checkpointer.restore(export_dir, args=ocp.args.PyTreeRestore(
      item=abstract_export, restore_args=restore_args, partial_restore=True))
  checkpointer.close()
  return restored


def _tree_metadata(checkpointer: ocp.PyTreeCheckpointer, directory: epath.Path) -> PyTree:
  """The saved tree's per-leaf metadata (shapes, dtypes), unwrapped across orbax versions."""
  meta = checkpointer.metadata(directory)
  meta = getattr(meta, 'item_metadata', meta)
  return meta.tree if hasattr(meta, 'tree') else meta


def _flatten(tree: PyTree) -> dict[str, Any]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): v for k, v in flat}


def _short(e: BaseException) -> str:
  msg = str(e).strip().splitlines()
  return (msg[0] if msg else type(e).__name__)[:300]


def ensure_workdir(workdir: str) -> None:
  """Creates the workdir; a path that exists and is not a directory is a user error."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.ConfigError(f'--workdir={workdir!r} is a file, not a directory; pass a directory '
                             'path (it is created if missing).')
  os.makedirs(workdir, exist_ok=True)


def load_export_numpy(path: str) -> PyTree:
  """The whole `export` item of a run's latest step as host numpy arrays (for inspection/tests).

  Restoring as numpy needs no target shardings, so it works whatever topology saved the run.
  """
  directory, step = find_checkpoint(path, 'path')
  export_dir = directory / str(step) / 'export'
  checkpointer = ocp.PyTreeCheckpointer()
  meta = _tree_metadata(checkpointer, export_dir)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  restored = checkpointer.restore(export_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  checkpointer.close()
  return restored
