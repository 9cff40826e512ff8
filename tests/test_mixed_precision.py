"""bfloat16 compute with float32 params, optimizer state, statistics and losses
(`config.compute_dtype`): the convolutions really run in bfloat16, the step's numbers stay close to
float32's, and everything the state holds stays float32."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from kd_jax import checkpoint as ckpt_lib
from kd_jax import errors, losses, models
from kd_jax.distill import core
from kd_jax.train_state import TrainState
from kd_jax.trainers import classification

X0 = jnp.zeros((1, 28, 28, 1), jnp.float32)


def _setup(dtype):
  teacher = models.get('small_cnn', num_classes=10, width=8)
  t_vars = teacher.init(jax.random.key(1), X0, train=False)
  composite = losses.compose([('kd', 0.5, {'temperature': 2.0}), ('ce', 0.5, {})])
  student = models.get('small_cnn', num_classes=10, width=4)
  frozen = core.Frozen(teacher, t_vars)
  d = core.build(student, [frozen], composite.required_keys, output='logits', example=X0,
                 compute_dtype=dtype)
  spec = classification.Spec(d, (composite,), augment=False)
  params, model_state = d.init(jax.random.key(0), X0)
  state = TrainState.create(params=params, model_state=model_state, tx=optax.sgd(0.1))
  return spec, state, d.teacher_tree([frozen])


def _batch():
  rng = np.random.default_rng(0)
  return {'image': jnp.asarray(rng.integers(0, 255, (32, 28, 28, 1)), jnp.uint8),
          'label': jnp.asarray(rng.integers(0, 10, 32), jnp.int32)}


def test_bfloat16_step_is_close_to_float32_and_keeps_the_state_float32():
  batch, rng = _batch(), jax.random.key(0)
  out = {}
  for name, dtype in (('f32', None), ('bf16', jnp.bfloat16)):
    spec, state, tree = _setup(dtype)
    step = jax.jit(functools.partial(classification.train_step, spec=spec))
    if dtype is not None:
      hlo = step.lower(state, tree, batch, rng).as_text()
      assert any('convolution' in line and 'bf16' in line for line in hlo.splitlines())
    new, metrics = step(state, tree, batch, rng)
    out[name] = (state, new, metrics)
  for leaf in jax.tree.leaves((out['bf16'][1].params, out['bf16'][1].model_state,
                               out['bf16'][1].opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  for key in ('loss', 'kd', 'ce'):
    assert float(out['bf16'][2][key]) == pytest.approx(float(out['f32'][2][key]), rel=3e-2), key
  # The update points the same way (bfloat16 keeps ~3 significant digits per product).
  delta = lambda o: np.concatenate([np.ravel(b - a) for a, b in zip(
      jax.tree.leaves(o[0].params), jax.tree.leaves(o[1].params))])
  a, b = delta(out['f32']), delta(out['bf16'])
  assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.98


def test_bfloat16_run_trains_and_exports_float32(teacher_workdir, tiny_data_dir, tmp_path):
  summary = classification.train_and_evaluate(
      tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                  **{'teacher.checkpoint': teacher_workdir, 'compute_dtype': 'bfloat16'}),
      str(tmp_path / 'run'))
  assert 0.0 <= summary['eval']['eval/student_top1'] <= 1.0
  exported = ckpt_lib.load_export_numpy(str(tmp_path / 'run'))
  assert {np.asarray(a).dtype for a in jax.tree.leaves(exported)} == {np.dtype('float32')}
  with pytest.raises(errors.ConfigError, match="config.compute_dtype='float16'"):
    classification.train_and_evaluate(
        tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                    **{'teacher.checkpoint': teacher_workdir, 'compute_dtype': 'float16'}),
        str(tmp_path / 'bad'))
