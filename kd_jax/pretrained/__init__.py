"""Teachers shipped with kd_jax: small Fashion-MNIST runs kd_jax trained, stored in this package.

Each is an export-only run directory (`kd_jax.checkpoint.write_export_only`) under
`kd_jax/pretrained/<name>/`, so `teacher.checkpoint`, `eval.classifier_checkpoint` and
`frozen_net.checkpoint` take it as `pretrained:<name>` (e.g. `pretrained:fashion_mnist/dcgan`).
`manifest.json` says for each: the config and the command that reproduces it, the commit it was
trained at, the sha256 of its files and the metrics measured on it. `python -m kd_jax.pretrained
verify` checks the files against the manifest; `pack` adds a finished run.

This module stays light (no JAX): `kd_jax.checkpoint` resolves the prefix through it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from kd_jax import errors

PREFIX = 'pretrained:'
DIR = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(DIR, 'manifest.json')


def manifest() -> dict[str, dict[str, Any]]:
  """name → entry (config, command, commit, sha256, metrics, ...); {} when nothing is shipped."""
  if not os.path.exists(MANIFEST):
    return {}
  with open(MANIFEST) as f:
    return json.load(f)['teachers']


def names() -> list[str]:
  return sorted(manifest())


def path_of(name: str, field: str = 'name') -> str:
  """The directory of shipped teacher `name`; CheckpointError naming the shipped ones otherwise."""
  entries = manifest()
  if name not in entries:
    known = ', '.join(PREFIX + n for n in sorted(entries)) or 'none'
    raise errors.CheckpointError(f'{field}={PREFIX}{name!r}: no shipped teacher of that name '
                                 f'(shipped: {known}; `python -m kd_jax.pretrained list`).')
  return os.path.join(DIR, *name.split('/'))


def resolve(path: str, field: str) -> str:
  """`pretrained:<name>` → its directory; any other path is returned unchanged."""
  if isinstance(path, str) and path.startswith(PREFIX):
    return path_of(path[len(PREFIX):], field)
  return path


def tree_sha256(directory: str) -> str:
  """sha256 over the sorted (relative path, file sha256) pairs of every file under `directory`."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      p = os.path.join(root, name)
      with open(p, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      h.update(f'{os.path.relpath(p, directory)}\0{digest}\n'.encode())
  return h.hexdigest()


def verify(name: str) -> None:
  """CheckpointError when the files of shipped teacher `name` differ from the manifest's sha256."""
  want = manifest()[name]['sha256']
  got = tree_sha256(path_of(name))
  if got != want:
    raise errors.CheckpointError(
        f'{PREFIX}{name}: its files do not match the manifest (sha256 {got[:12]}… vs {want[:12]}…);'
        f' restore them with `git checkout -- {os.path.relpath(path_of(name))}`.')
