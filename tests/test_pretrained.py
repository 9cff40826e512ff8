"""Shipped teachers: the manifest matches the files, `pretrained:<name>` loads them, `pack` is honest."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

from kd_jax import errors, pretrained, teacher as teacher_lib
from kd_jax.pretrained import __main__ as cli

SHIPPED = ('fashion_mnist/classifier', 'fashion_mnist/dcgan', 'fashion_mnist/stylegan2')


def test_every_shipped_teacher_matches_its_manifest_and_loads():
  assert set(SHIPPED) <= set(pretrained.names())
  for name in pretrained.names():
    entry = pretrained.manifest()[name]
    pretrained.verify(name)
    assert entry['command'].startswith('python launch.py --config configs/')
    assert entry['commit'] and entry['metrics']['step'] == entry['steps']
  t = teacher_lib.restore_teacher('pretrained:fashion_mnist/classifier', {}, role='model',
                                  init_args=[jnp.zeros((1, 28, 28, 1))])
  logits = t.module.apply(t.variables, jnp.zeros((2, 28, 28, 1)), train=False)
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  params = sum(x.size for x in jax.tree.leaves(t.variables['params']))
  assert params == pretrained.manifest()['fashion_mnist/classifier']['metrics']['student']['params']


def test_unknown_name_and_tampered_files_are_refused(tmp_path, monkeypatch):
  with pytest.raises(errors.CheckpointError, match=r"no shipped teacher of that name \(shipped: "
                     r"pretrained:fashion_mnist/classifier"):
    pretrained.resolve('pretrained:fashion_mnist/nope', 'config.teacher.checkpoint')
  # A copy of the package data with one byte changed fails verify and names the fix.
  root = tmp_path / 'pretrained'
  shutil.copytree(pretrained.DIR, root, ignore=shutil.ignore_patterns('*.py', '__pycache__'))
  monkeypatch.setattr(pretrained, 'DIR', str(root))
  monkeypatch.setattr(pretrained, 'MANIFEST', str(root / 'manifest.json'))
  pretrained.verify('fashion_mnist/classifier')
  victim = next(os.path.join(d, f) for d, _, fs in os.walk(root / 'fashion_mnist' / 'classifier')
                for f in fs if f == 'manifest.ocdbt')
  with open(victim, 'r+b') as f:
    byte = f.read(1)
    f.seek(0)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(errors.CheckpointError, match='do not match the manifest.*git checkout'):
    pretrained.verify('fashion_mnist/classifier')


def test_pack_ships_a_run_only_under_the_command_that_trained_it(teacher_workdir, tmp_path,
                                                                 monkeypatch):
  root = tmp_path / 'pretrained'
  root.mkdir()
  monkeypatch.setattr(pretrained, 'DIR', str(root))
  monkeypatch.setattr(pretrained, 'MANIFEST', str(root / 'manifest.json'))
  # The tiny teacher was trained by teacher.py:tiny, not by the demo config.
  assert cli.main(['pack', '--workdir', teacher_workdir, '--name', 'mine/classifier',
                   '--config', 'configs/fashion_mnist/teacher.py:demo']) == 2
  assert not os.path.exists(root / 'manifest.json') and not os.path.exists(root / 'mine')
  assert cli.main(['pack', '--workdir', teacher_workdir, '--name', 'mine/classifier',
                   '--config', 'configs/fashion_mnist/teacher.py:tiny']) == 0
  with open(root / 'manifest.json') as f:
    entry = json.load(f)['teachers']['mine/classifier']
  assert entry['command'] == ('python launch.py --config configs/fashion_mnist/teacher.py:tiny '
                              '--workdir WORKDIR')
  pretrained.verify('mine/classifier')
  t = teacher_lib.restore_teacher('pretrained:mine/classifier', {}, role='model',
                                  init_args=[jnp.zeros((1, 28, 28, 1))])
  assert t.model_config['name'] == 'resnet20'
