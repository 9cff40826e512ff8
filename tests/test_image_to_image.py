"""Paired image-to-image distillation: the fixed targets against NumPy, tiny teacher → student runs
per target kind (PSNR/SSIM vs target and teacher, FID), and a bad `target.kind`."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, errors
from kd_jax.data import paired
from kd_jax.trainers import autoencoder


def _np_correlate3(u, kernel):
  """Independent float64 3×3 cross-correlation with replicate padding (per channel, loops)."""
  b, h, w, c = u.shape
  p = np.pad(u.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  out = np.zeros((b, h, w, c))
  for y in range(h):
    for x in range(w):
      out[:, y, x] = np.einsum('bijc,ij->bc', p[:, y:y + 3, x:x + 3], kernel)
  return out


def _np_edges(x):
  u = (x + 1) / 2
  k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
  mag = np.hypot(_np_correlate3(u, k), _np_correlate3(u, k.T))
  return 2 * np.clip(mag / 4, 0, 1) - 1


def _np_stylize(x):
  t = np.clip(_np_correlate3((x + 1) / 2, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], float)),
              0, 1)
  return 2 * (3 * t**2 - 2 * t**3) - 1


@pytest.fixture
def images():
  """A vertical 0→1 step (one image) and uniform noise (two channels), in [-1, 1]."""
  step = np.full((1, 6, 6, 2), -1.0, np.float32)
  step[:, :, 3:] = 1.0
  noise = np.random.default_rng(0).uniform(-1, 1, (2, 6, 6, 2)).astype(np.float32)
  return np.concatenate([step, noise])


def test_targets_match_numpy(images):
  np.testing.assert_allclose(paired.edges(jnp.asarray(images)), _np_edges(images), atol=1e-5)
  np.testing.assert_allclose(paired.stylize(jnp.asarray(images)), _np_stylize(images), atol=1e-5)
  # Hand-checked values: the step's two edge columns score the full 1 (|∇u| = 4), flat areas −1;
  # the replicated border adds no edge.
  e = np.asarray(paired.edges(jnp.asarray(images[:1])))[0, :, :, 0]
  np.testing.assert_array_equal(e[:, [2, 3]], 1.0)
  np.testing.assert_array_equal(e[:, [0, 1, 4, 5]], -1.0)
  # Emboss keeps flat areas: stylize of a constant image is the tone curve of that value.
  flat = np.full((1, 4, 4, 1), 0.0, np.float32)  # u = 0.5, smoothstep(0.5) = 0.5
  np.testing.assert_allclose(paired.stylize(jnp.asarray(flat)), 0.0, atol=1e-6)
  # Deterministic, jit equal to eager (up to float32 fusion), in range; identity is the input itself.
  x = jnp.asarray(images)
  for kind in ('edges', 'stylize'):
    y = paired.transform(x, kind)
    np.testing.assert_array_equal(y, paired.transform(x, kind))
    np.testing.assert_allclose(y, jax.jit(paired.transform, static_argnums=1)(x, kind), atol=1e-6)
    assert -1.0 <= float(y.min()) and float(y.max()) <= 1.0
  assert paired.transform(x, 'identity') is x


@pytest.mark.parametrize('variant', ['edges', 'stylize', 'inpaint'])
def test_teacher_then_student(variant, tiny_data_dir, tmp_path):
  t_dir, s_dir = str(tmp_path / 't'), str(tmp_path / 's')
  fid_fn = {'eval.feature_fn': 'conftest:pooled_pixels'}
  t_summary = autoencoder.train_and_evaluate(
      _tiny('i2i_teacher.py', variant, tiny_data_dir, **fid_fn), t_dir)
  ref = 'clean' if variant == 'inpaint' else 'target'
  assert np.isfinite(t_summary['eval'][f'eval/student_vs_{ref}_psnr'])
  before = _flat(ckpt_lib.load_export_numpy(t_dir))
  s_summary = autoencoder.train_and_evaluate(
      _tiny('i2i_student.py', variant, tiny_data_dir, **fid_fn, **{'teacher.checkpoint': t_dir}),
      s_dir)
  # The frozen teacher's export is bitwise unchanged by the distillation.
  after = _flat(ckpt_lib.load_export_numpy(t_dir))
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  ev = s_summary['eval']
  for key in (f'eval/student_vs_{ref}_psnr', f'eval/teacher_vs_{ref}_ssim',
              'eval/student_vs_teacher_psnr', 'eval/student_vs_teacher_ssim'):
    assert np.isfinite(ev[key]), key
  on_disk = json.load(open(os.path.join(s_dir, 'summary.json')))
  assert on_disk['eval']['eval/student_vs_teacher_psnr'] == pytest.approx(
      ev['eval/student_vs_teacher_psnr'])
  fid = s_summary['fid']
  assert fid['feature_extractor'] == 'user feature_fn conftest:pooled_pixels'
  assert fid['num_images'] == 256
  for key in (f'student_vs_{ref}', f'teacher_vs_{ref}', 'student_vs_teacher'):
    assert np.isfinite(fid[key]) and fid[key] >= 0, key
  assert s_summary['params_ratio'] < 1 and set(ckpt_lib.load_export_numpy(s_dir)) == {'autoencoder'}
  if variant == 'inpaint':
    assert ev['eval/corrupted_vs_clean_psnr'] < 40  # the hole is measurably there


def _tiny(relpath, variant, data_dir, **fields):
  """configs/fashion_mnist/<relpath> at `:<variant>,tiny` on the tiny data, `fields` set."""
  c = load_config(f'fashion_mnist/{relpath}', f'{variant},tiny')
  c.data.data_dir = data_dir
  for key, value in fields.items():
    config_utils.set_dotted(c, key, value)
  return c


def test_student_refuses_a_teacher_of_another_target(tiny_data_dir, tmp_path):
  t_dir = str(tmp_path / 't')
  autoencoder.train_and_evaluate(tiny_config('fashion_mnist/ae_teacher.py', tiny_data_dir), t_dir)
  config = tiny_config('fashion_mnist/i2i_student.py', tiny_data_dir, **{'teacher.checkpoint': t_dir})
  with pytest.raises(errors.ConfigError, match=r"learnt target 'identity'"):
    autoencoder.train_and_evaluate(config, str(tmp_path / 's'))


def test_bad_target_kind_writes_nothing(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  config = tiny_config('fashion_mnist/i2i_teacher.py', tiny_data_dir, **{'target.kind': 'edge'})
  with pytest.raises(errors.ConfigError) as info:
    autoencoder.train_and_evaluate(config, str(workdir))
  assert str(info.value).startswith("config.target.kind='edge' is not a paired target; use one of "
                                    "('identity', 'edges', 'stylize')")
  assert not workdir.exists()


def test_unknown_config_variant():
  with pytest.raises(ValueError, match=r"variant in \('edges', 'stylize', 'inpaint'\)"):
    load_config('fashion_mnist/i2i_teacher.py', 'edgy')
