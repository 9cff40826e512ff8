"""The frozen teacher sharded over a (data, model) mesh: the FSDP placement rule, per-device bytes,
and a KD run on a 2×4 mesh of the 8 virtual devices ending where the 8×1 run does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import tiny_config
from kd_jax import checkpoint as ckpt_lib
from kd_jax import errors, parallel
from kd_jax.trainers import classification

_MAKE_MESH = parallel.make_mesh  # the real one (conftest's fixture narrows it to 2 devices)


def test_fsdp_spec_cuts_the_largest_divisible_dimension():
  assert parallel.fsdp_spec((3, 3, 16, 32), 4) == P(None, None, None, 'model')
  assert parallel.fsdp_spec((64, 10), 4) == P('model')
  assert parallel.fsdp_spec((10,), 4) == P()      # nothing divides: replicated
  assert parallel.fsdp_spec((), 4) == P()         # scalars
  assert parallel.fsdp_spec((2, 8), 4) == P(None, 'model')


def test_mesh_shapes_and_bad_model_axis():
  mesh = _MAKE_MESH(model=4)
  assert dict(mesh.shape) == {'data': 2, 'model': 4} and parallel.model_axis_size(mesh) == 4
  assert parallel.batch_sharding(mesh).spec == P(('data', 'model'))  # batch over all 8 devices
  assert dict(_MAKE_MESH().shape) == {'data': 8}
  with pytest.raises(errors.ConfigError, match=r'config.mesh.model=3 does not divide the 8 '
                                               r'devices; use one of \[1, 2, 4, 8\]'):
    _MAKE_MESH(model=3)
  with pytest.raises(errors.ConfigError, match='positive integer'):
    _MAKE_MESH(model=0)


def test_sharded_teacher_holds_a_quarter_per_device_and_computes_the_same():
  rng = np.random.default_rng(0)
  tree = {'w1': rng.normal(size=(64, 128)).astype(np.float32),
          'w2': rng.normal(size=(128, 16)).astype(np.float32),
          'b': rng.normal(size=(10,)).astype(np.float32)}
  mesh = _MAKE_MESH(model=4)
  placed = parallel.place_teacher(tree, mesh)
  total = sum(a.nbytes for a in tree.values())
  per_device = parallel.per_device_bytes(placed)
  assert len(per_device) == 8
  # w1 and w2 split 4 ways, the 40-byte bias replicated: (total − 40)/4 + 40 on every device.
  assert set(per_device.values()) == {(total - 40) // 4 + 40}
  x = parallel.to_global({'x': rng.normal(size=(16, 64)).astype(np.float32)}, mesh)['x']
  f = jax.jit(lambda t, x: jnp.tanh(x @ t['w1']) @ t['w2'] + t['b'][:1])
  np.testing.assert_allclose(np.asarray(f(placed, x)),
                             np.asarray(f(jax.tree.map(jnp.asarray, tree), np.asarray(x))),
                             rtol=1e-5, atol=1e-5)


def test_kd_on_a_2x4_mesh_matches_8x1(teacher_workdir, tiny_data_dir, tmp_path, monkeypatch):
  assert jax.device_count() == 8
  monkeypatch.setattr(parallel, 'make_mesh', _MAKE_MESH)
  placed = {}
  real_place = parallel.place_teacher

  def recording_place(tree, mesh):
    placed[parallel.model_axis_size(mesh)] = out = real_place(tree, mesh)
    return out
  monkeypatch.setattr(parallel, 'place_teacher', recording_place)
  results = {}
  for model in (1, 4):
    workdir = str(tmp_path / f'model{model}')
    summary = classification.train_and_evaluate(
        tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                    **{'teacher.checkpoint': teacher_workdir, 'total_steps': 4,
                       'mesh.model': model}), workdir)
    results[model] = (summary['eval'], {jax.tree_util.keystr(k): np.asarray(v) for k, v in
                                        jax.tree_util.tree_flatten_with_path(
                                            ckpt_lib.load_export_numpy(workdir))[0]})
  # Same eval losses and final params: only the reduction order of the all-gathers differs.
  for key, value in results[1][0].items():
    assert results[4][0][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
  for k, v in results[1][1].items():
    np.testing.assert_allclose(results[4][1][k], v, rtol=2e-4, atol=2e-5)
  # The teacher of the 2×4 run: each device holds about a quarter of it (its few leaves that 4
  # does not divide, e.g. the 10-way classifier bias, stay whole); the 8×1 run's is replicated.
  full = sum(a.nbytes for a in jax.tree.leaves(placed[1]))
  assert set(parallel.per_device_bytes(placed[1]).values()) == {full}
  quarter = parallel.per_device_bytes(placed[4])
  assert len(quarter) == 8 and max(quarter.values()) <= 0.3 * full, (quarter, full)
