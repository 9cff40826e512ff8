"""StyleGAN2-ADA end to end on the tiny data: the official modules trained by the GAN trainer on
Fashion-MNIST padded to 32 px, distilled into a smaller student through the teacher's D, and the
student written out as an official state dict (and read back, bitwise)."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import shared_dir, tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import data, errors
from kd_jax.convert import __main__ as cli
from kd_jax.convert import formats
from kd_jax.convert import stylegan2_ada as sg2
from kd_jax.trainers import gan, gen_eval, generator_distill

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def sg2_teacher(tiny_data_dir, teacher_workdir, tmp_path_factory):
  def build(root):
    gan.train_and_evaluate(
        tiny_config('fashion_mnist/stylegan2_teacher.py', tiny_data_dir,
                    **{'eval.classifier_checkpoint': teacher_workdir}), str(root / 'run'))
  return os.path.join(shared_dir(tmp_path_factory, 'sg2_teacher', build), 'run')


def test_teacher_trains_on_padded_data_with_its_buffers(sg2_teacher):
  summary = json.load(open(os.path.join(sg2_teacher, 'summary.json')))
  assert summary['step'] == 4
  q = summary['quality']
  assert 'centre 28×28' in q['feature_extractor'] and np.isfinite(q['fid'])
  exported = ckpt_lib.load_export_numpy(sg2_teacher)
  # G_ema carries w_avg (updated in training: no longer its zero init) and the filters; D too.
  assert set(exported['generator']) == {'params', 'buffers'}
  assert np.any(exported['generator']['buffers']['mapping']['w_avg'] != 0)
  assert 'buffers' in exported['discriminator']
  # The export is an official state dict as is.
  meta = ckpt_lib.read_meta(sg2_teacher, 'w')[2]
  sd = sg2.to_state_dict(meta['exported']['generator'], exported['generator'])
  assert 'mapping.w_avg' in sd and sd['synthesis.b32.torgb.weight'].shape[:2] == (1, 4)  # 128 // 32


def test_pad_to_pads_with_background_and_refuses_shrinking(tiny_data_dir):
  source = data.get_source('fashion_mnist', 'train', data_dir=tiny_data_dir)
  padded = data.sources.pad_source(source, 32)
  a, b = np.asarray(source[3]['image']), np.asarray(padded[3]['image'])
  assert b.shape == (32, 32, 1) and np.array_equal(b[2:30, 2:30], a)
  assert b.sum() == a.sum()  # only zeros (the black background) were added
  assert np.array_equal(np.asarray(gen_eval.center_crop(b[None], 28))[0], a)
  with pytest.raises(errors.ConfigError, match=r'pad_to=20 is smaller than the images \(28×28\)'):
    data.sources.pad_source(source, 20)


@pytest.fixture(scope='module')
def sg2_student(sg2_teacher, tiny_data_dir, tmp_path_factory):
  """One tiny `stylegan2_distill.py:gan` run: every regression term of the recipe plus the
  adversarial one (the default recipe is the same minus `gan_ns_g` and its D)."""
  from conftest import load_config  # pylint: disable=import-outside-toplevel
  config = load_config('fashion_mnist/stylegan2_distill.py', 'gan,tiny')
  config.data.data_dir = tiny_data_dir
  config.teacher.checkpoint, config.eval.classifier_checkpoint = sg2_teacher, ''
  assert config.adversarial.discriminator['name'] == 'stylegan2_ada_discriminator'
  config.adversarial.init_from = 'teacher'  # the path `:data_d` takes, through a whole run
  # Built once for both pytest-xdist workers (conftest.shared_dir), like the teacher.
  root = shared_dir(tmp_path_factory, 'sg2_student',
                    lambda r: generator_distill.train_and_evaluate(config, str(r / 'student')))
  workdir = os.path.join(root, 'student')
  return workdir, json.load(open(os.path.join(workdir, 'summary.json')))


def test_adversarial_distillation_trains_a_discriminator_beside_the_regressions(sg2_student):
  workdir, summary = sg2_student
  assert summary['step'] == 4
  # Every term of the recipe was trained and logged (the TensorBoard events are the record).
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0})
  events.Reload()
  tags = set(events.Tags()['tensors'])
  assert {'train/l1', 'train/lpips', 'train/feat_b16', 'train/relation_kl', 'train/gan_ns_g',
          'train/d_loss', 'train/r1'} <= tags, tags
  # The adversarial D stays in the training state; the export is the student generator only.
  assert set(ckpt_lib.load_export_numpy(workdir)) == {'generator'}
  assert summary['params_ratio'] < 1 and summary['flops_ratio'] < 1


def test_distilled_student_exports_to_an_official_state_dict(sg2_student, tiny_data_dir,
                                                            tmp_path):
  workdir, _ = sg2_student
  out = str(tmp_path / 'G.safetensors')
  assert cli.main(['--to', 'stylegan2_ada', '--in', workdir, '--out', out]) == 0
  sd = formats.load_state_dict(out)
  # Back in: the same variables, bit for bit, under the inferred config.
  config, variables = sg2.generator_from_state_dict(sd, fused_modconv=False)
  exported = ckpt_lib.load_export_numpy(workdir)['generator']
  assert _flat(variables) .keys() == _flat(exported).keys()
  assert all(np.array_equal(v, _flat(exported)[k]) for k, v in _flat(variables).items())
  expected = dict(tiny_config('fashion_mnist/stylegan2_distill.py', tiny_data_dir).model)
  assert {k: config[k] for k in expected} == expected
  # The CLI imports it as a teacher (role 'generator'), refusing to overwrite that run after.
  imported = str(tmp_path / 'imported')
  assert cli.main(['--from', 'stylegan2_ada', '--in', out, '--out', imported]) == 0
  assert set(ckpt_lib.load_export_numpy(imported)) == {'generator'}
  proc = subprocess.run([sys.executable, '-m', 'kd_jax.convert', '--from', 'stylegan2_ada', '--in',
                         out, '--out', imported], capture_output=True, text=True, cwd=REPO,
                        timeout=300)
  assert proc.returncode != 0 and 'already holds checkpoints' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_adversarial_d_can_start_from_the_teachers_and_a_mismatch_is_refused(sg2_teacher):
  from conftest import load_config  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  config = load_config('fashion_mnist/stylegan2_distill.py', 'data_d,tiny')
  assert config.adversarial.init_from == 'teacher' and config.mode == 'data'
  config.teacher.checkpoint = sg2_teacher
  spec = types.SimpleNamespace(disc=object())  # only "is there a D" is read
  start = generator_distill._discriminator_start(config, spec, (32, 32, 1), None)  # pylint: disable=protected-access
  teacher_d = ckpt_lib.load_export_numpy(sg2_teacher)['discriminator']
  assert _flat(start).keys() == _flat(teacher_d).keys()
  assert all(np.array_equal(v, _flat(teacher_d)[k]) for k, v in _flat(start).items())
  disc = generator_distill.config_utils.build_model(config.adversarial.discriminator, 'd')
  assert generator_distill.initial_discriminator(disc, start, None, (32, 32, 1), None) is start
  fresh = generator_distill.initial_discriminator(disc, None, jax.random.key(0), (32, 32, 1), None)
  assert _flat(fresh).keys() == _flat(teacher_d).keys()
  assert not all(np.array_equal(np.asarray(v), _flat(teacher_d)[k])
                 for k, v in _flat(jax.tree.map(jnp.asarray, fresh)).items())
  # A D of other shapes than the teacher's: one message naming the field; no D at all: refused.
  config.adversarial.discriminator = dict(config.adversarial.discriminator, channel_base=64)
  with pytest.raises(errors.CheckpointError, match='config.adversarial.discriminator'):
    generator_distill._discriminator_start(config, spec, (32, 32, 1), None)  # pylint: disable=protected-access
  with pytest.raises(errors.ConfigError, match='no adversarial D'):
    generator_distill._discriminator_start(config, types.SimpleNamespace(disc=None), (32, 32, 1),  # pylint: disable=protected-access
                                           None)
  config.adversarial.init_from = 'student'
  with pytest.raises(errors.ConfigError, match="init_from='student'"):
    generator_distill._discriminator_start(config, spec, (32, 32, 1), None)  # pylint: disable=protected-access
  d_only = load_config('fashion_mnist/stylegan2_distill.py', 'd_only')
  assert [t[0] for t in d_only.losses] == ['gan_ns_g'] and d_only.frozen_net.kind == 'none'
  assert d_only.adversarial.init_from == 'teacher'
  assert load_config('fashion_mnist/stylegan2_distill.py', 'data').adversarial.init_from == ''


def test_data_variant_is_the_scratch_recipe_plus_the_distillation_terms():
  """`stylegan2_distill.py:data` must differ from `stylegan2_scratch_student.py` only by the
  teacher's terms, or "distilled vs scratch at equal steps" would compare recipes instead."""
  from conftest import load_config  # pylint: disable=import-outside-toplevel
  from configs.fashion_mnist import stylegan2_distill  # pylint: disable=import-outside-toplevel
  dist = load_config('fashion_mnist/stylegan2_distill.py', 'data')
  scratch = load_config('fashion_mnist/stylegan2_scratch_student.py', None)
  assert dist.mode == 'data' and dist.model == scratch.generator
  assert dist.adversarial.discriminator == scratch.discriminator
  assert dist.total_steps == scratch.total_steps and dist.data.batch_size == scratch.data.batch_size
  assert dist.ema_decay == scratch.ema_decay > 0
  # D's fakes drawn as the GAN trainer draws them (test_steps: then the step is the GAN step).
  assert dist.adversarial.fresh_latents and dist.adversarial.init_from == ''
  assert (dist.adversarial.r1_gamma, dist.adversarial.r1_every) == (scratch.r1_gamma,
                                                                    scratch.r1_every)
  for ours, theirs in ((dist.optimizer, scratch.g_optimizer),
                       (dist.adversarial.optimizer, scratch.d_optimizer)):
    for field in ('name', 'learning_rate', 'schedule', 'b1', 'b2'):
      assert ours[field] == theirs[field], field
  weights = {(t['label'] if isinstance(t, dict) and t.get('label') else
              t['name'] if isinstance(t, dict) else t[0]):
             (t['weight'] if isinstance(t, dict) else t[1]) for t in dist.losses}
  assert weights == {'l1': stylegan2_distill.DATA_KD_WEIGHT,
                     'lpips': stylegan2_distill.DATA_KD_WEIGHT,
                     'feat_b16': stylegan2_distill.DATA_KD_WEIGHT,
                     'relation_kl': stylegan2_distill.DATA_KD_WEIGHT, 'gan_ns_g': 1.0}
