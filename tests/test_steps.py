"""The importable train steps, called directly on hand-built specs (no config, no loop, no workdir):
the teacher is an argument that nothing changes or differentiates, the loss terms move the student
the way their weights say, the outputs dict holds exactly what the plan needs, jit == eager."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import _read_idx_gz, make_tiny_idx
from conftest import flat_tree as _flat
from kd_jax import losses, models
from kd_jax.distill import core
from kd_jax.metrics import cost, image as image_metrics
from kd_jax.train_state import TrainState
from kd_jax.trainers import classification, generator_distill

X0 = jnp.zeros((1, 28, 28, 1), jnp.float32)


@pytest.fixture(scope='module')
def batch(tmp_path_factory):
  """32 Fashion-MNIST training images (random ones without Debian's files), uint8 NHWC."""
  idx = make_tiny_idx(str(tmp_path_factory.mktemp('idx')), n_train=32, n_test=1)
  images = _read_idx_gz(os.path.join(idx, 'train-images-idx3-ubyte.gz'))[..., None]
  labels = _read_idx_gz(os.path.join(idx, 'train-labels-idx1-ubyte.gz')).astype(np.int32)
  return {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}


def _random_variables(module, *args, seed=1):
  """Random variables of `module`, shaped by `init` (traced abstractly), filled in NumPy: a frozen
  teacher only has to be a fixed function, and Flax's initializers take seconds to compile."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if 'kernel' in name:
      return rng.normal(size=leaf.shape).astype(np.float32) / np.sqrt(np.prod(leaf.shape[:-1]))
    if 'scale' in name or 'var' in name:
      return np.ones(leaf.shape, np.float32)
    return rng.normal(scale=0.1, size=leaf.shape).astype(np.float32)  # biases, running means
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, train=False))
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def frozen_teacher():
  """A random small CNN twice the student's width (a ResNet-20 would triple every compile here)."""
  module = models.get('small_cnn', num_classes=10, width=8)
  return core.Frozen(module, _random_variables(module, X0))


def _spec(teacher, terms, **kw):
  composite = losses.compose(terms)
  student = models.get('small_cnn', num_classes=10, width=4)
  distiller = core.build(student, [teacher], composite.required_keys, output='logits', example=X0)
  return classification.Spec(distiller, (composite,), augment=kw.pop('augment', False), **kw)


def _state(spec, tx=None, seed=0):
  params, model_state = spec.distiller.init(jax.random.key(seed), X0)
  return TrainState.create(params=params, model_state=model_state, tx=tx or optax.adam(1e-2))


KD = [('kd', 1.0, {'temperature': 1.0})]


def test_teacher_is_an_argument_the_step_neither_changes_nor_differentiates(frozen_teacher, batch):
  spec = _spec(frozen_teacher, KD + [('ce', 1.0, {})], augment=True)
  tree = spec.distiller.teacher_tree([frozen_teacher])
  before = _flat(jax.device_get(tree))
  rng = jax.random.key(0)
  # Jitted as the loop jits it, the state donated: the teacher must survive every step untouched.
  step = jax.jit(functools.partial(classification.train_step, spec=spec), donate_argnums=(0,))
  state = _state(spec)
  for _ in range(3):
    state, _ = step(state, tree, batch, rng)
  after = _flat(jax.device_get(tree))
  assert before.keys() == after.keys() and len(before) > 10
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  # The teacher is not in the state: the optimizer sees only the student (and no extras here).
  assert set(state.params) == {'student', 'extras'} and state.params['extras'] == {}
  student_vars = spec.distiller.student.init(jax.random.key(0), X0, train=False)
  assert cost.param_count(state.params) == cost.param_count(student_vars['params'])

  # The step's loss has exactly zero gradient w.r.t. the teacher's variables (stop_gradient)...
  state = _state(spec)
  loss_of_teacher = lambda t: classification.train_step(state, t, batch, rng, spec=spec)[1]['loss']
  grads = _flat(jax.jit(jax.grad(loss_of_teacher))(tree))
  assert all(not np.any(g) for g in grads.values())
  # ...although the loss does depend on them: the same terms on the teacher's raw logits.
  images = classification.step_inputs(spec, batch['image'], state.step, rng)

  def raw_loss(t):
    out, _ = spec.distiller.student_outputs(state.params, state.model_state, images, {},
                                            tree=t, train=True)
    logits = frozen_teacher.module.apply(t['teachers'][0], images, train=False)
    return spec.losses[0]({**out, 'teacher_logits': logits, 'labels': batch['label']}, 0)[0]
  assert any(np.any(g) for g in _flat(jax.jit(jax.grad(raw_loss))(tree)).values())


def test_kd_steps_lower_the_kd_term_and_a_zero_weight_leaves_its_gradient_out(frozen_teacher,
                                                                              batch):
  rng = jax.random.key(0)
  kd = _spec(frozen_teacher, KD)
  step = jax.jit(functools.partial(classification.train_step, spec=kd))
  state = _state(kd)
  _, first = step(state, kd.distiller.teacher_tree([frozen_teacher]), batch, rng)
  for _ in range(5):
    state, _ = step(state, kd.distiller.teacher_tree([frozen_teacher]), batch, rng)
  _, last = step(state, kd.distiller.teacher_tree([frozen_teacher]), batch, rng)
  # Measured: 0.154 → 0.020 (0.13×).
  assert float(last['kd/raw']) < 0.5 * float(first['kd/raw']), (first['kd/raw'], last['kd/raw'])

  # kd at weight 0 next to ce moves the student exactly as ce alone; kd at weight 1 does not.
  updated = {}
  for name, terms in (('zero', [('kd', 0.0, {'temperature': 1.0}), ('ce', 1.0, {})]),
                      ('ce', [('ce', 1.0, {})]),
                      ('one', [('kd', 1.0, {'temperature': 1.0}), ('ce', 1.0, {})])):
    spec = _spec(frozen_teacher, terms)
    new, metrics = jax.jit(functools.partial(classification.train_step, spec=spec))(
        _state(spec, optax.sgd(0.1)), spec.distiller.teacher_tree([frozen_teacher]), batch, rng)
    updated[name] = (_flat(new.params['student']), metrics)
  zero, ce, one = updated['zero'], updated['ce'], updated['one']
  assert float(zero[1]['kd']) == 0.0 and float(zero[1]['kd/raw']) > 0.0
  np.testing.assert_allclose(float(zero[1]['grad_norm']), float(ce[1]['grad_norm']), rtol=1e-6)
  for k in ce[0]:
    np.testing.assert_allclose(zero[0][k], ce[0][k], rtol=1e-6, atol=1e-7)
  assert max(float(np.max(np.abs(one[0][k] - ce[0][k]))) for k in ce[0]) > 1e-4


class _Recording:
  """A composite that records the outputs dict the step hands it (the keys, at trace time)."""

  def __init__(self, composite):
    self.composite, self.seen = composite, {}

  def __call__(self, outputs, step):
    self.seen = {k: tuple(v.shape) for k, v in outputs.items()}
    return self.composite(outputs, step)


def test_outputs_dict_holds_exactly_what_the_terms_need(frozen_teacher, batch):
  terms = [('kd', 1.0, {}), ('ce', 1.0, {}), {'name': 'fitnet', 'weight': 1.0, 'layer': 'stage2'}]
  spec = _spec(frozen_teacher, terms)
  d = spec.distiller
  assert d.student_paths == ('stage2',) and d.teacher_paths == (('stage2',),)
  recorder = _Recording(spec.losses[0])
  spec = classification.Spec(d, (recorder,), augment=False)
  _, metrics = jax.eval_shape(functools.partial(classification.train_step, spec=spec),
                              _state(spec), d.teacher_tree([frozen_teacher]), batch,
                              jax.random.key(0))
  assert set(recorder.seen) == {'student_logits', 'teacher_logits', 'teacher0_logits', 'labels',
                                'student_features/stage2', 'teacher_features/stage2',
                                'adapted/stage2:stage2'}
  # The adapter maps the student's 8 channels onto the teacher's 16, shape for shape.
  assert recorder.seen['student_features/stage2'] == (32, 14, 14, 8)
  assert recorder.seen['adapted/stage2:stage2'] == recorder.seen['teacher_features/stage2'] == (
      32, 14, 14, 16)
  assert {'fitnet', 'fitnet/raw', 'kd', 'ce', 'loss', 'grad_norm', 'accuracy',
          'agreement'} <= set(metrics)


def test_jit_and_eager_steps_agree(frozen_teacher, batch):
  spec = _spec(frozen_teacher, KD + [('ce', 1.0, {})], augment=True)
  tree = spec.distiller.teacher_tree([frozen_teacher])
  step = functools.partial(classification.train_step, spec=spec)
  rng = jax.random.key(3)
  s_jit, m_jit = jax.jit(step)(_state(spec), tree, batch, rng)
  s_eager, m_eager = step(_state(spec), tree, batch, rng)
  assert m_jit.keys() == m_eager.keys()
  for k in m_jit:
    np.testing.assert_allclose(float(m_jit[k]), float(m_eager[k]), rtol=1e-6, atol=1e-6, err_msg=k)
  a, b = _flat(s_jit.params), _flat(s_eager.params)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _tiny_generator_pair():
  """A DCGAN w4 teacher (random weights) and a w2 student under an L1 distiller, latent size 8."""
  gen = lambda width: models.get('dcgan_generator', latent_dim=8, width=width, resolution=28,
                                 channels=1)
  z0 = jnp.zeros((1, 8), jnp.float32)
  teacher = core.Frozen(gen(4), _random_variables(gen(4), z0, None))
  composite = losses.compose([('l1', 1.0, {})])
  distiller = core.build(gen(2), [teacher], composite.required_keys, output='images', example=z0,
                         call_kwargs={'labels': None})
  return teacher, composite, distiller, z0


def test_generator_l1_steps_pull_the_student_onto_the_teachers_images():
  """The L1 term on shared latents: after a few steps the student's images (eval mode, fixed
  latents the step never saw) are closer to the teacher's than at init, in L1 and PSNR."""
  teacher, composite, distiller, z0 = _tiny_generator_pair()
  spec = generator_distill.Spec(distiller, composite, latent_dim=8)
  params, model_state = distiller.init(jax.random.key(0), z0, labels=None)
  state = generator_distill.DistillState(
      TrainState.create(params=params, model_state=model_state, tx=optax.adam(3e-2)), None)
  tree = distiller.teacher_tree([teacher])
  batch = {'image': jnp.zeros((16, 28, 28, 1), jnp.uint8), 'label': jnp.zeros((16,), jnp.int32)}
  z = jax.random.normal(jax.random.key(99), (64, 8))
  t_images = jax.jit(functools.partial(teacher.module.apply, train=False))(teacher.variables, z)

  @jax.jit
  def distance(st):
    images = distiller.student.apply({'params': st.params['student'],
                                      **st.model_state['student']}, z, None, train=False)
    return jnp.mean(jnp.abs(images - t_images)), jnp.mean(image_metrics.psnr(images, t_images))

  l1_init, psnr_init = distance(state.student)
  step = jax.jit(functools.partial(generator_distill.train_step, spec=spec))
  for _ in range(20):
    state, metrics = step(state, tree, batch, jax.random.key(0))
  l1_end, psnr_end = distance(state.student)
  assert set(metrics) == {'loss', 'l1', 'l1/raw'}
  # Seeds 0-3 (of both networks) measured 0.32-0.68× the L1 and +3.6 to +9.4 dB.
  assert l1_end < 0.8 * l1_init and psnr_end > psnr_init + 2.0, (l1_init, l1_end, psnr_init,
                                                                  psnr_end)


def test_generator_distill_ema_follows_the_gan_trainers_rule_and_is_what_is_exported():
  """ema_decay > 0: after each step the EMA is decay_t·EMA + (1 − decay_t)·θ with the warm-up
  decay_t = min(d, (1 + t)/(10 + t)) (the GAN trainer's G_ema), and the export is that EMA."""
  teacher, composite, distiller, z0 = _tiny_generator_pair()
  spec = generator_distill.Spec(distiller, composite, latent_dim=8, ema_decay=0.9)
  params, model_state = distiller.init(jax.random.key(0), z0, labels=None)
  ema0 = jax.tree.map(jnp.copy, {'params': params['student'], **model_state['student']})
  state = generator_distill.DistillState(
      TrainState.create(params=params, model_state=model_state, tx=optax.adam(3e-2)), None, ema0)
  tree = distiller.teacher_tree([teacher])
  batch = {'image': jnp.zeros((16, 28, 28, 1), jnp.uint8), 'label': jnp.zeros((16,), jnp.int32)}
  step = jax.jit(functools.partial(generator_distill.train_step, spec=spec))
  expected = _flat(ema0['params'])
  for t in range(3):
    state, _ = step(state, tree, batch, jax.random.key(0))
    decay = min(0.9, (1.0 + t) / (10.0 + t))
    now = _flat(state.student.params['student'])
    expected = {k: decay * v + (1.0 - decay) * now[k] for k, v in expected.items()}
  got = _flat(state.ema['params'])
  for k, v in expected.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  # Trained weights moved away from the EMA, and the export carries the EMA (and the stats).
  assert any(not np.allclose(got[k], now[k]) for k in got)
  exported = generator_distill.export(state)['generator']
  assert _flat(exported['params']).keys() == got.keys()
  assert all(np.array_equal(_flat(exported['params'])[k], got[k]) for k in got)
  assert set(exported) == {'params', *model_state['student']}


def test_data_mode_with_fresh_latents_and_only_the_gan_term_is_the_gan_trainers_step():
  """`fresh_latents` draws the D step's fakes and the student step's latents as `gan.train_step`
  draws them, so a data-mode distillation with no term but the GAN loss is the GAN trainer's step
  (what makes `stylegan2_distill.py:data` "the scratch recipe plus the distillation terms")."""
  from kd_jax.trainers import gan  # pylint: disable=import-outside-toplevel
  teacher, _, _, z0 = _tiny_generator_pair()
  student = models.get('dcgan_generator', latent_dim=8, width=2, resolution=28, channels=1)
  disc = models.get('dcgan_discriminator', width=4)
  composite = losses.compose([('gan_ns_g', 1.0, {})])
  distiller = core.build(student, [teacher], composite.required_keys, output='images', example=z0,
                         call_kwargs={'labels': None})
  params, model_state = distiller.init(jax.random.key(0), z0, labels=None)
  d_vars = _random_variables(disc, jnp.zeros((1, 28, 28, 1)), None, seed=2)
  tx = lambda: optax.adam(1e-2, b1=0.0, b2=0.99)
  d_state = TrainState.create(params=d_vars['params'], model_state={}, tx=tx())
  g_vars = {'params': params['student'], **model_state['student']}
  gan_state = gan.GANState(
      g=TrainState.create(params=params['student'], model_state=model_state['student'], tx=tx()),
      d=d_state, g_ema=jax.tree.map(jnp.copy, g_vars))
  ours = generator_distill.DistillState(
      TrainState.create(params=params, model_state=model_state, tx=tx()), d_state,
      jax.tree.map(jnp.copy, g_vars))
  batch = {'image': jnp.asarray(np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1)),
                                jnp.uint8), 'label': jnp.zeros((16,), jnp.int32)}
  gan_step = jax.jit(functools.partial(gan.train_step, spec=gan.Spec(
      student, disc, 8, r1_gamma=0.5, ema_decay=0.9)))
  tree = distiller.teacher_tree([teacher])
  for fresh in (True, False):
    our_step = jax.jit(functools.partial(generator_distill.train_step, spec=generator_distill.Spec(
        distiller, composite, 8, data_mode=True, disc=disc, r1_gamma=0.5, ema_decay=0.9,
        fresh_latents=fresh)))
    a, b = gan_state, ours
    for _ in range(2):
      a, m_gan = gan_step(a, None, batch, jax.random.key(5))
      b, m_ours = our_step(b, tree, batch, jax.random.key(5))
    same = [np.allclose(v, _flat(b.student.params['student'])[k], rtol=1e-5, atol=1e-6)
            for k, v in _flat(a.g.params).items()]
    if fresh:  # G, D, the EMA and the losses: the same step, to float tolerance
      assert all(same)
      for x, y in ((a.d.params, b.disc.params), (a.g_ema, b.ema)):
        for k, v in _flat(x).items():
          np.testing.assert_allclose(v, _flat(y)[k], rtol=1e-5, atol=1e-6, err_msg=k)
      np.testing.assert_allclose(m_gan['g_loss'], m_ours['gan_ns_g'], rtol=1e-5)
      np.testing.assert_allclose(m_gan['d_loss'], m_ours['d_loss'], rtol=1e-5)
    else:  # the D step on the student step's own latents: another step
      assert not all(same)
