"""Shipped teachers: list them, verify their files, or pack a finished run as one.

  python -m kd_jax.pretrained list
  python -m kd_jax.pretrained verify
  python -m kd_jax.pretrained pack --workdir workdirs/fm_gan_teacher_demo --name fashion_mnist/dcgan \
      --config configs/fashion_mnist/gan_teacher.py:demo \
      --set eval.classifier_checkpoint=workdirs/fm_teacher_demo

`pack` refuses a run whose recorded config differs from `--config` with the `--set` overrides, so
the command the manifest states is the one that trained it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from kd_jax import errors, pretrained

REPO = os.path.dirname(os.path.dirname(pretrained.DIR))
# Summary fields kept as the manifest's measured metrics (the rest is per-run bookkeeping).
_DROP = ('eval_history', 'workdir')


def _git(*args: str) -> str:
  return subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True,
                        check=False).stdout.strip()


def _command(config: str, sets: Sequence[str]) -> str:
  return ' '.join(['python launch.py', f'--config {config}', '--workdir WORKDIR',
                   *(f'--config.{s}' for s in sets)])


def pack(workdir: str, name: str, config_arg: str, sets: Sequence[str]) -> dict[str, Any]:
  """Copies the export of the finished run `workdir` to `kd_jax/pretrained/<name>/`; adds an entry."""
  from kd_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from kd_jax import config_utils, run_identity  # pylint: disable=import-outside-toplevel
  path, _, arg = config_arg.partition(':')
  config = config_utils.load_config_file(path, arg or None)
  for item in sets:
    field, _, raw = item.partition('=')
    config_utils.check_override(config, field, raw)
    current = config
    for part in field.split('.'):
      current = current[part]
    parse = {bool: lambda r: r.strip().lower() in ('1', 'true'), int: int, float: float}.get(
        type(current), str)
    config_utils.set_dotted(config, field, parse(raw))
  saved = run_identity.read(workdir)
  if saved is None:
    raise errors.ConfigError(f'--workdir={workdir!r} has no {run_identity.FILE}; pack a finished '
                             'kd_jax run.')
  run_identity.refuse_if_different(saved, run_identity.of_config(config),
                                   f'--workdir={workdir!r} (vs --config {config_arg})')
  summary_path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(summary_path):
    raise errors.ConfigError(f'--workdir={workdir!r} has no summary.json: the run is unfinished.')
  with open(summary_path) as f:
    summary = json.load(f)
  _, step, meta = ckpt_lib.read_meta(workdir, '--workdir')
  export = ckpt_lib.load_export_numpy(workdir)
  entries = pretrained.manifest()
  dest = os.path.join(pretrained.DIR, *name.split('/'))
  # Written next to the destination first: a failure leaves the old teacher (if any) as it was.
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.pack-', dir=os.path.dirname(dest))
  try:
    run = os.path.join(tmp, 'run')
    ckpt_lib.write_export_only(run, export, {**meta, 'pretrained': name, 'trained_steps': step})
    if os.path.exists(dest):
      shutil.rmtree(dest)
    os.replace(run, dest)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  dirty = _git('status', '--porcelain', '--', 'kd_jax', 'configs', 'launch.py',
               ':(exclude)kd_jax/pretrained')
  entries[name] = {
      'config': config_arg, 'overrides': list(sets), 'command': _command(config_arg, sets),
      'commit': _git('rev-parse', 'HEAD') + (' (with uncommitted changes)' if dirty else ''),
      'packed': datetime.date.today().isoformat(), 'steps': step,
      'sha256': pretrained.tree_sha256(dest),
      'metrics': {k: v for k, v in summary.items() if k not in _DROP},
  }
  with open(pretrained.MANIFEST + '.tmp', 'w') as f:
    json.dump({'teachers': dict(sorted(entries.items()))}, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(pretrained.MANIFEST + '.tmp', pretrained.MANIFEST)
  return entries[name]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kd_jax.pretrained', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='cmd', required=True)
  sub.add_parser('list', help='the shipped teachers and their commands')
  sub.add_parser('verify', help="check every shipped teacher's files against the manifest")
  p = sub.add_parser('pack', help='ship a finished run as a teacher')
  p.add_argument('--workdir', required=True)
  p.add_argument('--name', required=True, help='e.g. fashion_mnist/dcgan')
  p.add_argument('--config', required=True, help='the config file[:arg] that trained it')
  p.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                 help='a --config.FIELD=VALUE override the run was trained with')
  args = parser.parse_args(argv)
  try:
    if args.cmd == 'list':
      for name, e in pretrained.manifest().items():
        print(f"{pretrained.PREFIX}{name}  ({e['steps']} steps)\n  {e['command']}")
    elif args.cmd == 'verify':
      for name in pretrained.names():
        pretrained.verify(name)
        print(f'{pretrained.PREFIX}{name}: ok')
    else:
      entry = pack(args.workdir, args.name, args.config, args.set)
      print(json.dumps(entry, indent=1))
  except errors.KDError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
