"""Offline KD from a teacher-output cache: fixed per-example augmentations, the cache built once and
read back, training from it equal to the online teacher on the same inputs, bad configs."""
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import errors
from kd_jax.data import augment
from kd_jax.distill import cache as cache_lib
from kd_jax.trainers import classification


def test_example_crop_flip_depends_on_the_id_only():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, size=(6, 8, 8, 1)).astype(np.uint8)
  key = jax.random.key(3)
  ids = np.array([5, 9, 2, 7, 11, 4], np.int32)
  a = np.asarray(augment.example_crop_flip(key, images, ids, pad=2))
  perm = np.array([3, 0, 5, 1, 4, 2])  # another batch order: each example keeps its crop
  b = np.asarray(augment.example_crop_flip(key, images[perm], ids[perm], pad=2))
  np.testing.assert_array_equal(a[perm], b)
  other = np.asarray(augment.example_crop_flip(key, images, ids + 100, pad=2))
  assert not np.array_equal(a, other)


def test_cached_teacher_equals_the_online_teacher(teacher_workdir, tiny_data_dir, tmp_path,
                                                  capsys):
  kw = {'teacher.checkpoint': teacher_workdir, 'total_steps': 4,
        'teacher_cache.dir': str(tmp_path / 'cache'), 'teacher_cache.copies': 2}
  results = {}
  for mode in ('online', 'cached'):
    summary = classification.train_and_evaluate(
        tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                    **{**kw, 'teacher_cache.mode': mode}), str(tmp_path / mode))
    results[mode] = (summary['eval'], _flat(ckpt_lib.load_export_numpy(str(tmp_path / mode))))
  assert 'teacher cache: built' in capsys.readouterr().out
  files = sorted(os.listdir(tmp_path / 'cache'))
  assert len(files) == 2 and files[0].endswith('.json') and files[1].endswith('.npy')
  cache = np.load(tmp_path / 'cache' / files[1])
  assert cache.shape == (512, 2, 10) and np.isfinite(cache).all()
  for k, v in results['online'][1].items():
    np.testing.assert_allclose(results['cached'][1][k], v, rtol=1e-5, atol=1e-6)
  for key, value in results['online'][0].items():
    assert results['cached'][0][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
  # A second run with the same teacher reads the cache instead of building it.
  classification.train_and_evaluate(
      tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                  **{**kw, 'teacher_cache.mode': 'cached', 'seed': 1}), str(tmp_path / 'again'))
  assert 'teacher cache: read' in capsys.readouterr().out


def test_cache_key_names_the_teacher_and_the_augmentation(tmp_path):
  base = dict(teacher_fingerprint='a', dataset='fashion_mnist', split='train', num_examples=10,
              copies=2, pad=2, flip=True, augment_enabled=True, seed=0)
  paths = {cache_lib.path_of(str(tmp_path), cache_lib.describe(**{**base, **change}))
           for change in ({}, {'teacher_fingerprint': 'b'}, {'copies': 3}, {'pad': 0}, {'seed': 1})}
  assert len(paths) == 5
  assert cache_lib.fingerprint({'w': np.ones(3)}) != cache_lib.fingerprint({'w': np.zeros(3)})


@pytest.mark.parametrize('fields,match', [
    ({'teacher_cache.mode': 'sometimes'}, 'config.teacher_cache.mode'),
    ({'teacher_cache.mode': 'cached', 'data.mixup_alpha': 0.2, 'losses': [('kd', 1.0, {})]},
     'mixup_alpha'),
    ({'teacher_cache.mode': 'cached', 'losses': [
        {'name': 'feature_mse', 'weight': 1.0,
         'inputs': {'student_features': 'adapted/stage2:stage2',
                    'teacher_features': 'teacher_features/stage2'}}]},
     'does not hold'),
    ({'teacher_cache.mode': 'cached', 'teacher_cache.copies': 0}, 'config.teacher_cache.copies'),
])
def test_bad_cache_configs(teacher_workdir, tiny_data_dir, tmp_path, fields, match):
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                       **{'teacher.checkpoint': teacher_workdir,
                          'teacher_cache.dir': str(tmp_path / 'cache')})
  from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
  for key, value in fields.items():
    if key == 'losses':
      config.losses = value
    else:
      config_utils.set_dotted(config, key, value)
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'cache')
