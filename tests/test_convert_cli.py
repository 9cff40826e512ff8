"""`python -m kd_jax.convert`: a torchvision teacher in as a kd_jax export, a student back out."""
import os

import jax.numpy as jnp
import numpy as np

from conftest import golden_file
from kd_jax import teacher as teacher_lib
from kd_jax.convert import __main__ as cli
from kd_jax.convert import formats




def test_import_restores_as_teacher_and_exports_back(tmp_path, capsys):
  pth, npz_path = golden_file('mobilenet_v2_w05.pth'), golden_file('mobilenet_v2_w05.npz')
  workdir = str(tmp_path / 'imported')
  assert cli.main(['--from', 'torchvision', '--in', pth, '--out', workdir,
                   '--check-npz', npz_path]) == 0
  assert 'logits_64 max error' in capsys.readouterr().out

  teacher = teacher_lib.restore_teacher(workdir, {}, role='model',
                                        init_args=(jnp.zeros((1, 64, 64, 3)),))
  assert teacher.model_config == {'name': 'torchvision_mobilenet_v2', 'num_classes': 10,
                                  'width_mult': 0.5}
  npz = np.load(npz_path)
  logits = teacher.module.apply(teacher.variables, jnp.asarray(npz['x_64'].transpose(0, 2, 3, 1)),
                                train=False)
  want = npz['logits_64']
  assert np.max(np.abs(np.asarray(logits) - want)) <= 1e-4 * np.max(np.abs(want))

  out = str(tmp_path / 'student.safetensors')
  assert cli.main(['--to', 'torchvision', '--in', workdir, '--out', out]) == 0
  back, original = formats.load_state_dict(out), formats.load_state_dict(pth)
  assert sorted(back) == sorted(original)
  for key, value in original.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    if key.endswith('num_batches_tracked'):
      assert back[key] == 0  # not part of a kd_jax export: torch reads it only with momentum=None
    else:
      assert np.array_equal(back[key], value), key


def test_import_that_fails_its_check_writes_nothing(tmp_path, capsys):
  npz = dict(np.load(golden_file('mobilenet_v2_w05.npz')))
  bad = str(tmp_path / 'bad.npz')
  np.savez(bad, x=npz['x_32'], logits=npz['logits_32'] + 1.0)
  workdir = str(tmp_path / 'imported')
  assert cli.main(['--from', 'torchvision', '--in', golden_file('mobilenet_v2_w05.safetensors'),
                   '--out', workdir, '--check-npz', bad]) == 2
  assert 'misses logits by' in capsys.readouterr().err
  assert not os.path.exists(workdir)

  assert cli.main(['--from', 'torchvision:resnet', '--in',
                   golden_file('mobilenet_v2_w05.safetensors'), '--out', workdir]) == 2
  assert "arch='resnet' but the state dict is a torchvision mobilenet_v2" in capsys.readouterr().err
  assert not os.path.exists(workdir)


def test_stylegan2_ada_import_checks_images_and_logits(tmp_path, capsys):
  npz = dict(np.load(golden_file('sg2ada_small.npz')))
  g_pairs, d_pairs = str(tmp_path / 'g.npz'), str(tmp_path / 'd.npz')
  np.savez(g_pairs, z=npz['z'], img=npz['img_psi1_const'])
  np.savez(d_pairs, img=npz['d_input_randn'], logits=npz['D_logits_randn'])
  assert cli.main(['--from', 'stylegan2_ada', '--in', golden_file('sg2ada_small_G.pth'),
                   '--out', str(tmp_path / 'G'), '--check-npz', g_pairs]) == 0
  assert cli.main(['--from', 'stylegan2_ada', '--in', golden_file('sg2ada_small_D.safetensors'),
                   '--out', str(tmp_path / 'D'), '--check-npz', d_pairs]) == 0
  assert 'img max error' in capsys.readouterr().out
  # Images PyTorch made with another truncation: refused, nothing written.
  np.savez(g_pairs, z=npz['z'], img=npz['img_psi0.7_const'])
  assert cli.main(['--from', 'stylegan2_ada', '--in', golden_file('sg2ada_small_G.safetensors'),
                   '--out', str(tmp_path / 'G2'), '--check-npz', g_pairs]) == 2
  assert 'misses img by' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'G2')
