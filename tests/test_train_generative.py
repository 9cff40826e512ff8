"""Tiny end-to-end runs of the generative trainers: GAN teacher, distillation (both modes), AE, denoising."""
import glob
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import shared_dir, tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import data, errors, models
from kd_jax.metrics import image as image_metrics
from kd_jax.trainers import autoencoder, gan, gen_eval, generator_distill


def _export(workdir):
  return ckpt_lib.load_export_numpy(workdir)


@pytest.fixture(scope='module')
def gan_workdir(tiny_data_dir, teacher_workdir, tmp_path_factory):
  def build(root):
    summary = gan.train_and_evaluate(
        tiny_config('fashion_mnist/gan_teacher.py', tiny_data_dir,
                    **{'eval.classifier_checkpoint': teacher_workdir}), str(root / 'run'))
    assert summary['step'] == 4
  return os.path.join(shared_dir(tmp_path_factory, 'gan_teacher', build), 'run')


def test_gan_teacher_checkpoint_grids_and_quality(gan_workdir, teacher_workdir, tiny_data_dir):
  exported = _export(gan_workdir)
  assert set(exported) == {'generator', 'discriminator'}
  # The full training state holds G, G_ema and D.
  directory, step = ckpt_lib.find_checkpoint(gan_workdir, 'workdir')
  state_meta = ocp.StandardCheckpointer().metadata(directory / str(step) / 'state')
  tree = getattr(state_meta, 'item_metadata', state_meta)
  tree = getattr(tree, 'tree', tree)
  assert {'g', 'd', 'g_ema'} <= set(tree)
  summary = json.load(open(os.path.join(gan_workdir, 'summary.json')))
  q = summary['quality']
  assert q['num_samples'] == 128 and 'resnet20@features' in q['feature_extractor']
  assert glob.glob(os.path.join(gan_workdir, 'images', 'samples_*.png'))
  # The reported quality is the exported G_ema's: recomputed from the export on the documented
  # latents (seed + 1) against the first training images, in the classifier's feature space.
  config = tiny_config('fashion_mnist/gan_teacher.py', tiny_data_dir)
  generator = models.get(**config.generator)
  z, _ = gen_eval.latents(config.eval.seed + 1, q['num_samples'], config.generator['latent_dim'], 0)
  fake = gen_eval.sample_images(
      lambda zz, _: generator.apply(exported['generator'], zz, None, train=False), z, None, 64)
  real = gen_eval.real_images(data.get_source('fashion_mnist', 'train', data_dir=tiny_data_dir),
                              q['num_samples'])
  features, _ = gen_eval.load_feature_net(teacher_workdir, 'features', (28, 28, 1))
  fake_f, real_f = (image_metrics.extract_features(features, x, 64) for x in (fake, real))
  precision, recall = image_metrics.precision_recall(real_f, fake_f, k=3)
  assert (q['precision'], q['recall']) == pytest.approx((precision, recall), abs=1e-6)
  assert q['fid'] == pytest.approx(image_metrics.fid(fake_f, real_f), rel=1e-4)


@pytest.mark.parametrize('cfg,mode', [('fashion_mnist/distill_full.py', 'data_free'),
                                      ('fashion_mnist/distill_full.py', 'data'),
                                      ('fashion_mnist/distill_disc.py', 'data_free')])
def test_generator_distillation(gan_workdir, teacher_workdir, tiny_data_dir, tmp_path, cfg, mode):
  before = _flat(_export(gan_workdir))
  config = tiny_config(cfg, tiny_data_dir, **{
      'teacher.checkpoint': gan_workdir, 'frozen_net.checkpoint': teacher_workdir,
      'eval.classifier_checkpoint': teacher_workdir, 'mode': mode})
  summary = generator_distill.train_and_evaluate(config, str(tmp_path))
  # Teacher checkpoint bitwise unchanged.
  after = _flat(_export(gan_workdir))
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  # Exported student = the student generator only: no adapters, no adversarial D, no teacher.
  exported = _export(str(tmp_path))
  assert set(exported) == {'generator'}
  n = sum(v.size for k, v in _flat(exported['generator']['params']).items())
  assert n == summary['student']['params']
  if 'full' in cfg:
    assert summary['extras_params'] > 0
    directory, step = ckpt_lib.find_checkpoint(str(tmp_path), 'workdir')
    state = ocp.StandardCheckpointer().metadata(directory / str(step) / 'state')
    tree = getattr(getattr(state, 'item_metadata', state), 'tree', state)
    assert 'adapters' in tree['student']['params']['extras'] and tree['disc'] is not None
  pairs = summary['student_vs_teacher_same_latents']
  assert pairs['num_pairs'] == 64 and np.isfinite(pairs['vs_teacher_psnr'])
  assert summary['params_ratio'] < 1
  assert 'fid' in summary['quality_student'] and 'fid' in summary['quality_teacher']
  assert glob.glob(str(tmp_path / 'images' / 'teacher_vs_student_*.png'))


def test_distill_wrong_family_teacher(teacher_workdir, tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/distill_l1.py', tiny_data_dir,
                       **{'teacher.checkpoint': teacher_workdir,
                          'eval.classifier_checkpoint': teacher_workdir})
  with pytest.raises(errors.CheckpointError, match="is a 'classification' run.*not a 'generator'"):
    generator_distill.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize('losses,error,match', [
    ([{'name': 'feature_mse', 'weight': 1.0,
       'inputs': {'student_features': 'adapted/no_such_layer:block0',
                  'teacher_features': 'teacher_features/block0'}}], errors.ConfigError,
     'no_such_layer'),
    ([{'name': 'feature_mse', 'weight': 1.0,
       'inputs': {'student_features': 'adapted/block0:block1',
                  'teacher_features': 'teacher_features/block1'}}], errors.ConfigError,
     'only changes channels'),
    ([('perceptual_magic', 1.0, {})], errors.ConfigError, "unknown loss 'perceptual_magic'"),
])
def test_distill_bad_loss_config(gan_workdir, tiny_data_dir, tmp_path, losses, error, match):
  """A feature path that does not exist, an adapter that cannot match, an unknown term."""
  # (No classifier: the feature-space metrics' checkpoint is checked before the losses.)
  config = tiny_config('fashion_mnist/distill_l1.py', tiny_data_dir,
                       **{'teacher.checkpoint': gan_workdir, 'eval.classifier_checkpoint': ''})
  config.losses = losses
  with pytest.raises(error, match=match):
    generator_distill.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize('kind', ['ae', 'denoise'])
def test_autoencoder_teacher_then_student(kind, tiny_data_dir, tmp_path):
  t_dir, s_dir = str(tmp_path / 't'), str(tmp_path / 's')
  t_summary = autoencoder.train_and_evaluate(
      tiny_config(f'fashion_mnist/{kind}_teacher.py', tiny_data_dir), t_dir)
  assert 'eval/student_vs_clean_psnr' in t_summary['eval']
  s_summary = autoencoder.train_and_evaluate(
      tiny_config(f'fashion_mnist/{kind}_student.py', tiny_data_dir,
                  **{'teacher.checkpoint': t_dir}), s_dir)
  ev = s_summary['eval']
  for key in ('eval/student_vs_clean_psnr', 'eval/teacher_vs_clean_ssim',
              'eval/student_vs_teacher_psnr'):
    assert np.isfinite(ev[key])
  if kind == 'denoise':
    # The corrupted input is measurably different from the clean image.
    assert ev['eval/corrupted_vs_clean_psnr'] < 40
  assert set(_export(s_dir)) == {'autoencoder'}
  assert s_summary['extras_params'] > 0 and s_summary['params_ratio'] < 1
  assert glob.glob(os.path.join(s_dir, 'images', 'restoration_*.png'))


def test_autoencoder_rejects_a_gan_teacher(gan_workdir, tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/ae_student.py', tiny_data_dir,
                       **{'teacher.checkpoint': gan_workdir})
  with pytest.raises(errors.CheckpointError, match="not a 'autoencoder'"):
    autoencoder.train_and_evaluate(config, str(tmp_path))


def test_l1_distillation_closes_the_psnr_gap_and_a_user_feature_function_drives_quality(
    gan_workdir, tiny_data_dir, tmp_path):
  """After 24 L1 steps the student's images on the summary's shared latents are closer to the
  teacher's than the same student's at init (seeds 0-2 measured +2.3 to +4.5 dB); and
  `config.eval.feature_fn` (e.g. a user's Inception) drives FID/KID/PR and is named in reports."""
  config = tiny_config('fashion_mnist/distill_l1.py', tiny_data_dir, **{
      'teacher.checkpoint': gan_workdir, 'eval.classifier_checkpoint': '',
      'eval.feature_fn': 'conftest:pooled_pixels', 'total_steps': 24, 'eval_every': 0,
      'log_every': 24, 'checkpoint_every': 24, 'optimizer.learning_rate': 3e-2})
  summary = generator_distill.train_and_evaluate(config, str(tmp_path))
  for side in ('quality_student', 'quality_teacher'):
    assert summary[side]['feature_extractor'] == 'user feature_fn conftest:pooled_pixels'
    assert np.isfinite(summary[side]['fid']) and summary[side]['num_samples'] == 128
  # The same pairs (latents seed + 7) from the student at init (the trainer's init: the run's key).
  student, teacher = models.get(**config.model), models.get(**config.teacher.model)
  key = jax.random.key(config.seed)
  init = student.init({'params': key, 'noise': key}, np.zeros((1, 64), np.float32), train=False)
  pairs = summary['student_vs_teacher_same_latents']
  z, _ = gen_eval.latents(config.eval.seed + 7, pairs['num_pairs'], 64, 0)
  t_images = teacher.apply(_export(gan_workdir)['generator'], z, None, train=False)
  s_images = {'init': student.apply(init, z, None, train=False),
              'trained': student.apply(_export(str(tmp_path))['generator'], z, None, train=False)}
  psnr = {k: float(np.mean(image_metrics.psnr(v, t_images))) for k, v in s_images.items()}
  assert pairs['vs_teacher_psnr'] == pytest.approx(psnr['trained'], abs=1e-3)
  assert psnr['trained'] > psnr['init'] + 1.0, psnr


def test_bad_user_feature_function(gan_workdir, tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/distill_l1.py', tiny_data_dir, **{
      'teacher.checkpoint': gan_workdir, 'eval.feature_fn': 'no_such_module:features'})
  with pytest.raises(errors.ConfigError, match='config.eval.feature_fn'):
    generator_distill.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')  # rejected before training
