"""End to end through the classification trainer: every loss-library method of the benchmark config,
stages, several teachers, function matching, CRD's memory bank, and their config errors."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, errors, losses, models, parallel
from kd_jax.losses import contrast
from kd_jax.train_state import TrainState
from kd_jax.trainers import classification, classification_eval, common, stages as stages_lib

load_config('fashion_mnist/methods.py', 'kd,tiny')  # puts the repository root on sys.path
from configs.fashion_mnist import methods as methods_config  # pylint: disable=wrong-import-position

METHODS = sorted(methods_config.METHODS)


def _config(method, data_dir, teacher_workdir, **fields):
  config = load_config('fashion_mnist/methods.py', f'{method},tiny')
  config.data.data_dir = data_dir
  if config.teacher.checkpoint:
    config.teacher.checkpoint = teacher_workdir
  for key, value in fields.items():
    config_utils.set_dotted(config, key, value)
  return config


# ... and a few points of the tuning sweep (`:<method>,val,<knobs>`: dict-form terms with knobs).
@pytest.mark.parametrize('method', METHODS + ['fitnet_stages', 'pkt,val,w=0.1', 'dkd,val,beta=2',
                                              'kd,val,alpha=0.9,T=4', 'dist,val,w=2,T=4'])
def test_every_method_builds_a_spec_whose_steps_log_every_term(method, tiny_data_dir,
                                                               teacher_workdir, tmp_path):
  """Every benchmark config restores its teacher, sizes its extras, and each stage's importable
  step (traced abstractly: nothing runs) logs each of the stage's terms, weighted and raw."""
  config = _config(method, tiny_data_dir, teacher_workdir)
  run = common.prepare(config, classification.default_config(), str(tmp_path), with_eval=False)
  example = jnp.zeros((1, *run.image_shape), jnp.float32)
  student = config_utils.build_model(config.model, 'config.model')
  teachers = common.restore_teachers(config, role='model', example=example)
  spec, stage_list = classification.build_spec(config, student, teachers, run.train_source, example)
  assert len(stage_list) == (2 if method == 'fitnet_stages' else 1)
  tx = stages_lib.make_tx(stage_list)
  state = jax.eval_shape(lambda: TrainState.create(
      **dict(zip(('params', 'model_state'), spec.distiller.init(jax.random.key(0), example))), tx=tx))
  batch = classification_eval.abstract_batch(config.data.batch_size, run.train_source)
  tree = spec.distiller.teacher_tree(teachers)
  for i, stage in enumerate(stage_list):
    _, metrics = jax.eval_shape(functools.partial(classification.train_step, spec=spec, stage=i),
                                state, tree, batch, jax.random.key(0))
    for label in stage.composite.labels:
      assert {label, f'{label}/raw'} <= set(metrics), (method, label)
    assert all(m.shape == () for m in metrics.values())


def _export_top1(workdir, config, data_dir):
  """Top-1 of the exported student on the eval split, recomputed here from the export alone."""
  from kd_jax import data  # pylint: disable=import-outside-toplevel
  exported = ckpt_lib.load_export_numpy(workdir)['model']
  source = data.get_source('fashion_mnist', 'test', data_dir=data_dir)
  images = np.stack([np.asarray(source[i]['image']) for i in range(len(source))])
  labels = np.asarray([int(source[i]['label']) for i in range(len(source))])
  student = config_utils.build_model(config.model, 'config.model')
  logits = student.apply(exported, images.astype(np.float32) / 127.5 - 1.0, train=False)
  return float(np.mean(np.argmax(logits, -1) == labels))


# Full tiny runs for the methods with their own code paths (the others differ only in the pure
# loss, which the golden tests cover): labels + a weight schedule, attention maps, adapters, stages,
# VID's regressor and variance, CRD's heads and bank.
@pytest.mark.parametrize('method', ['dkd', 'at', 'fitnet', 'fitnet_stages', 'vid', 'crd'])
def test_method_trains_and_exports_only_the_student(method, tiny_data_dir, teacher_workdir,
                                                    tmp_path):
  config = _config(method, tiny_data_dir, teacher_workdir)
  summary = classification.train_and_evaluate(config, str(tmp_path))
  assert summary['eval']['eval/student_top1'] == pytest.approx(
      _export_top1(str(tmp_path), config, tiny_data_dir), abs=1e-9)
  exported = ckpt_lib.load_export_numpy(str(tmp_path))
  n_exported = sum(v.size for k, v in _flat(exported).items() if "'params'" in k)
  # Adapters, VID regressors/variances and CRD embeddings are trained but never exported.
  assert n_exported == summary['student']['params']
  if method in ('fitnet', 'fitnet_stages', 'vid', 'crd'):
    assert summary['extras_params'] > 0
  else:
    assert summary['extras_params'] == 0


def _checkpoint_state(workdir, step):
  """The raw saved TrainState pytree (numpy) at `step`."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return ocp.PyTreeCheckpointer().restore(path)


def test_stages_switch_losses_and_optimizers(tiny_data_dir, teacher_workdir, tmp_path):
  """FitNets' hint stage trains only the layers below the hint (+ regressor), then KD takes over
  with its own optimizer state and schedule."""
  config = _config('fitnet_stages', tiny_data_dir, teacher_workdir, checkpoint_every=2,
                   keep_checkpoints=5)
  assert [s['steps'] for s in config.stages] == [2, 4]
  config.stages[1]['optimizer'] = {'learning_rate': 1e-2, 'schedule': 'constant'}
  classification.train_and_evaluate(config, str(tmp_path))
  init = models.get(**config.model).init(jax.random.key(config.seed),
                                         np.zeros((1, 28, 28, 1), np.float32), train=False)
  hint_end = _checkpoint_state(str(tmp_path), 2)
  final = _checkpoint_state(str(tmp_path), 6)
  init_p, hint_p, final_p = (_flat(init['params']), _flat(hint_end['params']['student']),
                             _flat(final['params']['student']))
  for key, value in init_p.items():
    above_hint = key.startswith(("['stage3']", "['head']"))
    if above_hint:  # no gradient reaches them in the hint stage (Adam moves nothing on zero grads)
      np.testing.assert_array_equal(hint_p[key], value, err_msg=key)
      assert not np.array_equal(final_p[key], value), key  # KD stage trains them
  assert not np.array_equal(hint_p["['stage1']['conv0']['conv']['kernel']"],
                            init_p["['stage1']['conv0']['conv']['kernel']"])
  # Each stage has its own optimizer state: the hint optimizer stopped at 2 steps, KD's ran 4.
  counts = [int(np.ravel(leaf)[0]) for leaf in jax.tree.leaves(final['opt_state'])
            if np.ndim(leaf) == 0 and np.issubdtype(np.asarray(leaf).dtype, np.integer)]
  assert 2 in counts and 4 in counts
  history = json.load(open(tmp_path / 'summary.json'))['eval_history']
  assert history[-1]['step'] == 6


def test_two_identical_teachers_average_to_one(tiny_data_dir, teacher_workdir, tmp_path):
  """Averaged targets of two copies of a teacher are that teacher's; per-teacher terms split KD."""
  one = _config('kd', tiny_data_dir, teacher_workdir, losses=[('kd', 1.0, {'temperature': 2.0})])
  s_one = classification.train_and_evaluate(one, str(tmp_path / 'one'))
  spec = {'checkpoint': teacher_workdir}
  avg = _config('kd', tiny_data_dir, teacher_workdir, **{'teacher.checkpoint': ''})
  avg.teachers = [spec, spec]
  avg.losses = [('kd', 1.0, {'temperature': 2.0})]
  s_avg = classification.train_and_evaluate(avg, str(tmp_path / 'avg'))
  split = _config('kd', tiny_data_dir, teacher_workdir, **{'teacher.checkpoint': ''})
  split.teachers = [spec, spec]
  split.losses = [{'name': 'kd', 'weight': 0.5, 'kwargs': {'temperature': 2.0},
                   'inputs': {'teacher_logits': f'teacher{i}_logits'}} for i in (0, 1)]
  s_split = classification.train_and_evaluate(split, str(tmp_path / 'split'))
  p_one, p_avg, p_split = (_flat(ckpt_lib.load_export_numpy(str(tmp_path / n)))
                           for n in ('one', 'avg', 'split'))
  for key, value in p_one.items():
    np.testing.assert_allclose(p_avg[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(p_split[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
  assert len(s_avg['teachers']) == 2 and 'teacher' in s_one
  assert s_avg['eval']['eval/teacher0_top1'] == s_avg['eval']['eval/teacher1_top1'] == (
      s_one['eval']['eval/teacher_top1'])
  assert s_split['eval']['eval/agreement'] == pytest.approx(s_one['eval']['eval/agreement'], abs=1e-3)


def test_function_matching_feeds_the_same_mixed_batch(tiny_data_dir, teacher_workdir, tmp_path,
                                                      monkeypatch):
  """With mixup the teacher labels exactly the images the student sees."""
  from kd_jax.models import features as features_lib
  seen = []
  real = features_lib.apply_with_features

  def spy(module, variables, images, *args, **kwargs):
    seen.append((type(module).__name__, images))
    return real(module, variables, images, *args, **kwargs)

  monkeypatch.setattr(features_lib, 'apply_with_features', spy)
  config = load_config('fashion_mnist/funmatch.py', 'tiny')
  config.data.data_dir = tiny_data_dir
  config.teacher.checkpoint = teacher_workdir
  classification.train_and_evaluate(config, str(tmp_path))
  traced = [(name, x) for name, x in seen if isinstance(x, jax.core.Tracer)]
  teacher_in = [x for name, x in traced if name == 'ResNet']
  student_in = [x for name, x in traced if name != 'ResNet']
  assert teacher_in and student_in
  assert teacher_in[0] is student_in[0]  # one array, not two draws of the augmentation


def test_function_matching_rejects_label_terms(tiny_data_dir, teacher_workdir, tmp_path):
  config = load_config('fashion_mnist/funmatch.py', 'tiny')
  config.data.data_dir = tiny_data_dir
  config.teacher.checkpoint = teacher_workdir
  config.losses = [('kd', 1.0, {'temperature': 1.0}), ('ce', 1.0, {})]
  with pytest.raises(errors.ConfigError, match='mixup_alpha'):
    classification.train_and_evaluate(config, str(tmp_path))


def test_crd_memory_bank_is_checkpointed_and_device_count_independent(tiny_data_dir,
                                                                      teacher_workdir, tmp_path,
                                                                      monkeypatch):
  """The bank is state (updated at the batch's record indices, Z fixed after the first step), saved
  with the student, and a 1-device run equals a 2-device run (the mesh and config of the `crd` case
  above: one compile fewer, from the persistent cache)."""
  real_mesh = parallel.make_mesh
  results = {}
  for n in (1, 2):
    monkeypatch.setattr(parallel, 'make_mesh', lambda devices=None, n=n: real_mesh(
        jax.devices()[:n]))
    config = _config('crd', tiny_data_dir, teacher_workdir)
    classification.train_and_evaluate(config, str(tmp_path / str(n)))
    results[n] = _checkpoint_state(str(tmp_path / str(n)), config.total_steps)
  bank = results[1]['model_state']['extras']['crd']
  assert float(bank['z_student']) > 0 and float(bank['z_teacher']) > 0
  config = _config('crd', tiny_data_dir, teacher_workdir)
  # The bank's init: fold 2 of the CRD extra's key (fold 1 of the run's root key: the first extra).
  init = contrast.init_memory(
      jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 1), 2), 512,
      config.crd.feat_dim)
  for side in ('student', 'teacher'):
    changed = np.any(bank[side] != np.asarray(init[side]), axis=1)
    # 6 steps × 32 examples of a 512-record split: those rows were written, the rest not.
    assert 0 < changed.sum() <= 6 * 32, side
    np.testing.assert_allclose(np.linalg.norm(bank[side][changed], axis=1), 1.0, rtol=1e-5)
  for key, value in _flat(results[1]).items():
    if 'opt_state' in key:
      continue
    # Float rounding of XLA:CPU's Eigen convs at another per-device batch, carried by 6 Adam steps
    # (seen: 1.1e-4 in the bank of unit rows; 4e-5 on a BatchNorm bias of 0.001 whose gradient is
    # near 0, where Adam's normalised step amplifies rounding): 1e-4, or 1e-3 of the array's scale.
    scale = float(np.abs(value).max()) if np.size(value) else 0.0
    np.testing.assert_allclose(_flat(results[2])[key], value, rtol=2e-4,
                               atol=max(1e-4, 1e-3 * scale), err_msg=key)


@pytest.mark.parametrize('fields, match', [
    ({'crd.num_negatives': 512}, 'config.crd: num_negatives=512'),
    ({'crd.student_feature': ''}, 'config.crd: CRD needs student_feature'),
    ({'crd.negatives': 'hard'}, "config.crd: negatives='hard'"),
])
def test_crd_config_errors(fields, match, tiny_data_dir, teacher_workdir, tmp_path):
  config = _config('crd', tiny_data_dir, teacher_workdir, **fields)
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path) or not os.path.exists(tmp_path / 'checkpoints')


def test_incompatible_feature_shapes_name_the_adapter_fix(tiny_data_dir, teacher_workdir, tmp_path):
  config = _config('kd', tiny_data_dir, teacher_workdir)
  # Student stage2 is 14×14, teacher stage3 7×7: a 1×1 conv cannot map one to the other.
  config.losses = [('ce', 1.0, {}), {'name': 'fitnet', 'weight': 1.0, 'layer': 'stage2:stage3'}]
  with pytest.raises(errors.ConfigError, match=r"config.losses: adapter stage2:stage3.*conv_bn_relu"):
    classification.train_and_evaluate(config, str(tmp_path / 'a'))
  # Caught before training: no checkpoint, no event file.
  assert not [f for _, _, files in os.walk(tmp_path / 'a') for f in files]
  # RepDistiller's regressor (3×3 stride-2 conv + BN + ReLU) maps it: the run trains.
  config.adapter = 'conv_bn_relu'
  summary = classification.train_and_evaluate(config, str(tmp_path / 'b'))
  state = _checkpoint_state(str(tmp_path / 'b'), config.total_steps)
  adapter = state['params']['extras']['adapters']['stage2-stage3']
  assert adapter['conv']['kernel'].shape == (3, 3, 8, 16)  # tiny widths: student 8, teacher 16
  assert 'batch_stats' in state['model_state']['extras']['adapters']
  assert 'extras' not in str(summary.get('student'))


@pytest.mark.parametrize('setup, match', [
    (lambda c: c.update({'stages': [{'steps': 2, 'losses': [('ce', 1.0)]}]}), 'total_steps'),
    (lambda c: c.update({'stages': [{'steps': 6, 'losses': [('ce', 1.0)], 'lr': 1}]}),
     r'config.stages\[0\]'),
    (lambda c: c.update({'losses': [('kd', 1.0, {}), {'name': 'kd', 'weight': 1.0, 'inputs': {
        'teacher_logits': 'teacher3_logits'}}]}), 'teacher3_logits'),
    (lambda c: c.update({'teachers': [{'checkpoint': 'x'}]}), 'not both'),
])
def test_stage_and_teacher_config_errors(setup, match, tiny_data_dir, teacher_workdir, tmp_path):
  config = _config('kd', tiny_data_dir, teacher_workdir)
  setup(config)
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path))


def test_a_loss_without_a_default_hyperparameter_needs_it_in_the_config():
  def needs_scale(student_logits, teacher_logits, *, scale):
    return scale * jax.numpy.mean((student_logits - teacher_logits) ** 2, axis=-1)

  losses.register('test_needs_scale', needs_scale, ('student_logits', 'teacher_logits'),
                  replace=True)
  with pytest.raises(errors.ConfigError, match=r"needs the hyperparameter\(s\) scale"):
    losses.compose([('test_needs_scale', 1.0)])
  composite = losses.compose([('test_needs_scale', 1.0, {'scale': 2.0})])
  assert composite.labels == ('test_needs_scale',)
