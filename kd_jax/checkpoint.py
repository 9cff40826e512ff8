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

import json
import os
import re
import shutil
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath
from jax.experimental import multihost_utils

from kd_jax import errors, pretrained, run_identity
from kd_jax.types import PyTree

CHECKPOINT_SUBDIR = 'checkpoints'
DAMAGED_SUBDIR = 'checkpoints_damaged'


def checkpoint_dir(workdir: str) -> epath.Path:
  # Orbax's OCDBT storage needs absolute paths; users pass relative ones.
  return epath.Path(os.path.abspath(workdir)) / CHECKPOINT_SUBDIR


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` with the four items above.

  Resuming goes through `restore_newest_intact`: a newest step that cannot be read (a torn write, a
  truncated or emptied file) is skipped for the next older one and moved aside, never deleted.
  """

  def __init__(self, workdir: str, *, save_every: int, keep: int):
    self.workdir = epath.Path(os.path.abspath(workdir))
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

  def restore_newest_intact(self, abstract_state: PyTree, abstract_export: PyTree,
                            identity: Mapping[str, Any]) -> tuple[PyTree, dict, int] | None:
    """(state, data-iterator state, step) of the newest step that restores completely, or None.

    `abstract_*` are trees of ShapeDtypeStruct with the target shardings; the `export` item is read
    too, so a damaged export (what a later run restores as its teacher) is caught here. A step whose
    `meta` records another run's identity stops the search with the fields that differ (older steps
    are that same other run). Damaged steps newer than the one restored are moved to
    `<workdir>/checkpoints_damaged/` (so the run can write those steps again); if no step restores,
    nothing is moved and the error lists why each failed.
    """
    damaged: list[tuple[int, str]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      meta = self._meta(step)
      saved_identity = meta.get('identity') if meta else None
      run_identity.refuse_if_different(saved_identity, identity,
                                       f'the checkpoint {self.directory}/{step}')
      try:
        self._preflight(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        # Separately: a failing item cancels the other item's reads mid-flight, which asyncio
        # reports as stray tracebacks.
        self.manager.restore(step, args=ocp.args.Composite(
            export=ocp.args.StandardRestore(abstract_export)))
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read a step means it cannot be resumed from; what matters is whether an
        # older one can. (Checkpoints written before run identities were recorded: a shape or
        # structure mismatch is a different run, as before.)
        if meta is not None and saved_identity is None and _is_mismatch(e):
          raise errors.CheckpointError(
              f'the checkpoint at {self.directory}/{step} does not match this config ({_short(e)}); '
              'it belongs to a different run: use a new --workdir (the existing checkpoints were '
              'left untouched).') from e
        damaged.append((step, 'meta unreadable' if meta is None else _damage(e)))
        continue
      self._move_aside(damaged)
      return restored['state'], dict(restored['data'] or {}), step
    if damaged:
      reasons = '; '.join(f'step {s}: {r}' for s, r in damaged[:3])
      raise errors.CheckpointError(
          f'no checkpoint in {self.directory} can be restored ({reasons}); nothing was moved or '
          'deleted. If kd_jax changed since they were written, resume with that version; otherwise '
          'use a new --workdir.')
    return None

  def _preflight(self, step: int) -> None:
    """Decodes the array items' OCDBT manifests and indexes (see `_ocdbt_index`)."""
    for item in ('state', 'export'):
      _ocdbt_index(self.directory / str(step) / item)

  def _meta(self, step: int) -> dict | None:
    """The step's `meta` item, or None when it is missing or unreadable."""
    path = self.directory / str(step) / 'meta' / 'metadata'
    try:
      meta = json.loads(path.read_text())
    except (OSError, ValueError):
      return None
    return meta if isinstance(meta, dict) else None

  def _move_aside(self, damaged: list[tuple[int, str]]) -> None:
    if not damaged:
      return
    aside = self.workdir / DAMAGED_SUBDIR
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for step, reason in damaged:
        target = aside / str(step)
        n = 1
        while target.exists():
          target, n = aside / f'{step}.{n}', n + 1
        shutil.move(os.fspath(self.directory / str(step)), os.fspath(target))
        print(f'[kd_jax] checkpoint step {step} is damaged ({reason}); moved it to {target} '
              '(nothing deleted)', flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('kd_jax_checkpoints_moved_aside')
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _ocdbt_base(item_dir: epath.Path) -> str:
  return (str(item_dir) if '://' in str(item_dir) else f'file://{item_dir}') + '/'


def _ocdbt_index(item_dir: epath.Path) -> set[bytes] | None:
  """The keys of an item's OCDBT database (None: not OCDBT), decoding its manifest and index.

  One synchronous call that fails on a damaged manifest or index without reading any array; found
  by orbax's parallel reads, the same damage leaves orphaned asyncio tasks that print tracebacks.
  """
  if not (item_dir / 'manifest.ocdbt').exists():
    return None
  kvstore = ts.KvStore.open({'driver': 'ocdbt', 'base': _ocdbt_base(item_dir)}).result()
  return set(kvstore.list().result())


def _damage(e: BaseException) -> str:
  """A short reason: tensorstore's status code and the file it failed on, else the first line."""
  text = str(e)
  files = re.findall(r'local file "([^"]+)"', text)
  code = re.match(r'([A-Z_]{4,}):', text)
  if files:
    return f'{code.group(1) if code else "error"} reading {files[-1]}'
  if 'pytree structure' in text or 'tree structure' in text:
    return f'the saved metadata does not describe its arrays ({_short(e)[:120]})'
  return _short(e)[:200]


def _is_mismatch(e: BaseException) -> bool:
  text = str(e).lower()
  return any(w in text for w in ('shape', 'structure', 'mismatch', 'not compatible'))


def find_checkpoint(path: str, field: str) -> tuple[epath.Path, int]:
  """Resolves a run's workdir or its `checkpoints/` dir (or a step dir) to (checkpoints dir, step).

  Raises:
    CheckpointError: `path` is empty, missing, a file, or a directory with no finished checkpoint.
  """
  if not path:
    raise errors.CheckpointError(f'{field} is empty; set it to the --workdir of a finished run.')
  path = pretrained.resolve(path, field)  # `pretrained:<name>`: a teacher shipped with kd_jax
  p = epath.Path(os.path.abspath(path))
  if not p.exists():
    raise errors.CheckpointError(
        f'{field}={path!r} does not exist; point it at the --workdir of a finished run '
        '(train the teacher first, see the README).')
  if not p.is_dir():
    raise errors.CheckpointError(
        f'{field}={path!r} is a file, not a run\'s --workdir; point it at the --workdir of a '
        f'finished kd_jax run (the directory holding {CHECKPOINT_SUBDIR}/).')
  candidates = [p / CHECKPOINT_SUBDIR, p]
  for directory in candidates:
    if directory.is_dir():
      try:
        steps = ocp.utils.checkpoint_steps(directory)
      except Exception as e:  # pylint: disable=broad-except
        raise errors.CheckpointError(
            f'{field}={path!r}: cannot list the checkpoints in {directory} ({_short(e)}).') from e
      if steps:
        return directory, max(steps)
  if p.name.isdigit() and (p / 'export').exists():
    return p.parent, int(p.name)
  contents = sorted(x.name for x in p.iterdir())
  held = ('it is empty' if not contents else
          f"it holds {', '.join(contents[:5])}{' ...' if len(contents) > 5 else ''}")
  raise errors.CheckpointError(
      f'{field}={path!r} holds no kd_jax checkpoint (no finished {CHECKPOINT_SUBDIR}/<step>; '
      f'{held}); point it at the --workdir of a finished kd_jax run.')


def read_meta(path: str, field: str) -> tuple[epath.Path, int, dict]:
  """(checkpoints dir, step, meta) of a run's latest step; CheckpointError if meta is unreadable."""
  directory, step = find_checkpoint(path, field)
  meta_dir = directory / str(step) / 'meta'
  damaged = (f'the teacher run\'s checkpoint is damaged: train it again, or point {field} at '
             'another run')
  try:
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(meta_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.CheckpointError(
        f'{field}={path!r}: cannot read {meta_dir} ({_short(e)}); is it a kd_jax run? If it is, '
        f'{damaged}.') from e
  exported = meta.get('exported') if isinstance(meta, dict) else None
  if (not isinstance(exported, dict) or not all(isinstance(v, dict) for v in exported.values())
      or not isinstance(meta.get('trainer', ''), str)):
    found = ' '.join(repr(meta).split())
    raise errors.CheckpointError(
        f"{field}={path!r}: {meta_dir} is not a kd_jax run's metadata (a JSON dict with 'trainer' "
        f"and 'exported' model configs; found {found[:80]}{'...' if len(found) > 80 else ''}); "
        f'{damaged}.')
  return directory, step, meta


def restore_export(path: str, abstract_export: PyTree, field: str, *,
                   model_field: str = 'config.teacher.model') -> PyTree:
  """Restores part of the `export` item of a run's latest step, checking shapes and bytes first.

  `abstract_export` names the roles to restore (e.g. `{'generator': <abstract variables>}`); other
  exported roles are left on disk. Every leaf's shape is compared before restoring, so a teacher
  model config (at `model_field`) that does not match its checkpoint is reported by name instead of
  as an orbax trace. Every array of those roles is then read once synchronously, so a truncated or
  missing file is one CheckpointError naming it (orbax's asynchronous reads would fail with a trace,
  and with more traces printed by its reads still in flight).

  Raises:
    CheckpointError: no such run, unreadable meta, a missing or damaged export, or a model mismatch.
  """
  directory, step, _ = read_meta(path, field)
  export_dir = directory / str(step) / 'export'
  damaged = (f'{field}={path!r}: the teacher\'s exported weights in {export_dir} are damaged '
             '({}); train the teacher again, or point ' + field + ' at another run.')
  if not export_dir.is_dir():
    raise errors.CheckpointError(damaged.format('the directory is missing'))
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    # The index first, synchronously: orbax's metadata read of a damaged index leaves asynchronous
    # reads behind that print tracebacks at exit.
    try:
      keys = _ocdbt_index(export_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise errors.CheckpointError(damaged.format(f'its index cannot be read: {_short(e)}')) from e
    try:
      meta_tree = _tree_metadata(checkpointer, export_dir)
    except errors.CheckpointError as e:
      raise errors.CheckpointError(damaged.format(e)) from e
    want = _flatten(abstract_export)
    have = _flatten({k: v for k, v in meta_tree.items() if k in abstract_export})
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
      raise errors.CheckpointError(
          f'{field}={path!r} does not match the teacher model config: parameters '
          f'{(missing or extra)[:3]} are {"missing from the checkpoint" if missing else "unexpected"}; '
          f'set {model_field} to the model config the teacher was trained with (or leave it empty '
          'to use the saved one).')
    for name, leaf in want.items():
      if tuple(have[name].shape) != tuple(leaf.shape):
        raise errors.CheckpointError(
            f'{field}={path!r} does not match the teacher model config: {name} has shape '
            f'{tuple(have[name].shape)} in the checkpoint but {tuple(leaf.shape)} in the model; set '
            f'{model_field} to the model config the teacher was trained with (or leave it empty to '
            'use the saved one).')
    if keys is not None:
      base = _ocdbt_base(export_dir)
      roles = tuple(f'{role}.'.encode() for role in abstract_export)
      arrays = sorted({k.rsplit(b'/', 1)[0] for k in keys
                       if k.endswith((b'/.zarray', b'/zarr.json')) and k.startswith(roles)})
      for name in arrays:
        driver = 'zarr' if name + b'/.zarray' in keys else 'zarr3'
        try:
          ts.open({'driver': driver, 'kvstore': {'driver': 'ocdbt', 'base': base,
                                                 'path': name.decode() + '/'}},
                  open=True, read=True).result().read().result()
        except Exception as e:  # pylint: disable=broad-except
          raise errors.CheckpointError(damaged.format(
              f'array {name.decode()} cannot be read: {_short(e)[:240]}')) from e
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_export)
    try:
      return checkpointer.restore(export_dir, args=ocp.args.PyTreeRestore(
          item=abstract_export, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise errors.CheckpointError(damaged.format(_short(e)[:240])) from e
  finally:
    checkpointer.close()


def _tree_metadata(checkpointer: ocp.PyTreeCheckpointer, directory: epath.Path) -> PyTree:
  """The saved tree's per-leaf metadata (shapes, dtypes), unwrapped across orbax versions.

  Raises:
    CheckpointError: the metadata is missing or unreadable (a damaged or partial checkpoint).
  """
  try:
    meta = checkpointer.metadata(directory)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.CheckpointError(f'cannot read the metadata of {directory}: {_short(e)}') from e
  meta = getattr(meta, 'item_metadata', meta)
  tree = meta.tree if hasattr(meta, 'tree') else meta
  if not isinstance(tree, Mapping):
    raise errors.CheckpointError(f'no readable tree metadata in {directory} (_METADATA or its '
                                 'index is missing or truncated)')
  return tree


def _flatten(tree: PyTree) -> dict[str, Any]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): v for k, v in flat}


def _short(e: BaseException) -> str:
  msg = str(e).strip().splitlines()
  return (msg[0] if msg else type(e).__name__)[:300]


def ensure_workdir(workdir: str) -> None:
  """Creates the workdir; a path that is not a directory this process can create and write is a
  user error (ConfigError naming the path and why)."""
  if not workdir:
    raise errors.ConfigError('--workdir is empty; pass a directory path (it is created if missing).')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.ConfigError(f'--workdir={workdir!r} is a file, not a directory; pass a directory '
                             'path (it is created if missing).')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    ancestor = os.path.dirname(os.path.abspath(workdir))
    while ancestor and not os.path.exists(ancestor):
      ancestor = os.path.dirname(ancestor)
    why = (f'{ancestor} is a file' if os.path.isfile(ancestor) else
           f'{e.strerror or type(e).__name__} under {ancestor}')
    raise errors.ConfigError(f'--workdir={workdir!r} cannot be created ({why}); pass a directory '
                             'path you can write (it is created if missing).') from None
  probe = os.path.join(workdir, f'.kd_jax_write_test_{os.getpid()}')
  try:
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise errors.ConfigError(f'--workdir={workdir!r} is not writable ({e.strerror or e}); pass a '
                             'directory you can write.') from None


def load_item_numpy(item_dir: str | epath.Path) -> PyTree:
  """One saved item (a step's `state` or `export` dir) as host numpy arrays (inspection/tests).

  Restoring as numpy needs no target shardings, so it works whatever topology saved the run.
  """
  item_dir = epath.Path(os.path.abspath(item_dir)) if '://' not in str(item_dir) else item_dir
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    meta = _tree_metadata(checkpointer, item_dir)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return checkpointer.restore(item_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  finally:
    checkpointer.close()


def load_export_numpy(path: str) -> PyTree:
  """The whole `export` item of a run's latest step as host numpy arrays (see `load_item_numpy`)."""
  directory, step = find_checkpoint(path, 'path')
  return load_item_numpy(directory / str(step) / 'export')


def write_export_only(out: str, export: PyTree, meta: dict[str, Any]) -> None:
  """Writes a run directory holding only an export (step 0): what any `teacher.checkpoint` loads.

  Imports (`kd_jax.convert`) and shipped teachers (`kd_jax.pretrained`) are such directories. The
  'state' item is only the step: nothing here can resume training. `out` must hold no
  checkpoints yet (a write never overwrites a run).
  """
  if os.path.isdir(checkpoint_dir(out)) and os.listdir(checkpoint_dir(out)):
    raise errors.ConfigError(f'--out={out!r} already holds checkpoints; give a new directory '
                             '(an export is never written over a run).')
  ensure_workdir(out)
  checkpointer = Checkpointer(out, save_every=1, keep=1)
  try:
    checkpointer.save(0, state={'step': np.zeros((), np.int32)}, data_state={}, export=export,
                      meta=meta, force=True)
    checkpointer.wait()
  finally:
    checkpointer.close()
