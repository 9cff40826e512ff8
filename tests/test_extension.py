"""User code without editing kd_jax: models and losses by import path, `models.register`, and the
config boundary (`config_utils.field_context`, `build_model`)."""
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kd_jax.losses
from kd_jax import config_utils, errors, imports, models, parallel
from kd_jax.losses import registry as loss_registry
from kd_jax.models import registry as model_registry

USER_MODULE = '''
import flax.linen as nn
import jax.numpy as jnp


class TinyNet(nn.Module):
  """A user classifier: conv, global average pool, dense head."""
  num_classes: int = 3
  width: int = 4

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(self.width, (3, 3), name='conv')(x))
    return nn.Dense(self.num_classes, name='head')(jnp.mean(x, axis=(1, 2)))


class TinyGenerator(nn.Module):
  kd_jax_kind = 'generator'
  latent_dim: int = 4

  @nn.compact
  def __call__(self, z, train=False):
    return jnp.tanh(nn.Dense(8 * 8, name='out')(z)).reshape(-1, 8, 8, 1)


class Namespace:
  class Inner(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x


def my_loss(student_logits, teacher_logits, *, temperature=1.0):
  return jnp.mean(jnp.square(student_logits / temperature - teacher_logits / temperature), axis=-1)


def defaulted_loss(student_logits, teacher_logits, temperature=1.0):
  return jnp.mean(student_logits - teacher_logits, axis=-1)


NOT_A_CLASS = 3
'''


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
  """An out-of-tree package `tests_pkg` on sys.path; registries are restored after each test."""
  pkg = tmp_path / 'tests_pkg'
  pkg.mkdir()
  (pkg / '__init__.py').write_text('')
  (pkg / 'mod.py').write_text(textwrap.dedent(USER_MODULE))
  (pkg / 'broken.py').write_text("raise RuntimeError('boom at import')\n")
  (pkg / 'needs_dep.py').write_text('import no_such_dependency_kd_jax\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  for name in [m for m in sys.modules if m == 'tests_pkg' or m.startswith('tests_pkg.')]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setattr(loss_registry, '_REGISTRY', dict(loss_registry._REGISTRY))
  monkeypatch.setattr(model_registry, '_MODELS', dict(model_registry._MODELS))
  yield 'tests_pkg'
  for name in [m for m in sys.modules if m == 'tests_pkg' or m.startswith('tests_pkg.')]:
    del sys.modules[name]


def test_resolve_reads_module_attributes(user_pkg):
  assert imports.resolve('tests_pkg.mod:NOT_A_CLASS') == 3
  assert imports.resolve('tests_pkg.mod:Namespace.Inner').__name__ == 'Inner'
  assert imports.resolve('os.path:join') is __import__('os').path.join
  assert imports.is_import_path('a.b:C') and not imports.is_import_path('resnet20')


@pytest.mark.parametrize('spec, match', [
    ('tests_pkg.nope:X', r"no module named 'tests_pkg.nope' \(ModuleNotFoundError: No module named "
                         r"'tests_pkg.nope'\); put the folder that holds 'tests_pkg' on PYTHONPATH"),
    ('tests_pkg.mod:Tinynet', r"'tests_pkg.mod' has no attribute 'Tinynet' \(AttributeError: .*\); "
                              r"did you mean 'TinyNet'\?"),
    ('tests_pkg.mod:Namespace.Outer', r"'tests_pkg.mod:Namespace' has no attribute 'Outer'"),
    ('tests_pkg.broken:X', r"importing module 'tests_pkg.broken' failed \(RuntimeError: boom at "
                           r"import\); fix that module"),
    ('tests_pkg.needs_dep:X', r"importing module 'tests_pkg.needs_dep' failed \(ModuleNotFoundError: "
                              r"No module named 'no_such_dependency_kd_jax'\)"),
    ('tests_pkg.mod:', r"give both the module and the name"),
    ('a:b:c', r"is not an import path 'pkg.module:Name'"),
])
def test_resolve_errors_are_one_line(user_pkg, spec, match):
  with pytest.raises(errors.ConfigError, match=match) as info:
    imports.resolve(spec)
  assert '\n' not in str(info.value) and info.value.__cause__ is None


def test_user_model_by_import_path_builds_and_inits(user_pkg):
  name = 'tests_pkg.mod:TinyNet'
  assert models.kind(name) == 'classifier'
  assert models.valid_kwargs(name) == ['num_classes', 'width']
  module = models.get(name, num_classes=5, width=2)
  x = jnp.zeros((2, 8, 8, 1))
  variables = jax.jit(module.init)(jax.random.key(0), x)
  assert variables['params']['head']['kernel'].shape == (2, 5)
  assert module.apply(variables, x).shape == (2, 5)
  assert models.kind('tests_pkg.mod:TinyGenerator') == 'generator'  # the class's kd_jax_kind
  built = config_utils.build_model({'name': name, 'num_classes': 2}, 'config.model')
  assert isinstance(built, nn.Module) and built.num_classes == 2


def test_user_model_errors(user_pkg):
  with pytest.raises(errors.ConfigError, match=r"unknown argument 'widht' for model "
                                               r"'tests_pkg.mod:TinyNet'; did you mean 'width'"):
    models.get('tests_pkg.mod:TinyNet', widht=3)
  with pytest.raises(errors.ConfigError, match=r"3 is not a flax.linen.Module subclass"):
    models.get('tests_pkg.mod:NOT_A_CLASS')
  with pytest.raises(errors.ConfigError, match=r"^config.teacher.model: import path .*no attribute"):
    config_utils.build_model({'name': 'tests_pkg.mod:Nope'}, 'config.teacher.model')
  with pytest.raises(errors.ConfigError, match=r"unknown model 'resnet21'.*'pkg.module:ClassName'"):
    models.get('resnet21')


def test_register_a_model(user_pkg):
  cls = imports.resolve('tests_pkg.mod:TinyNet')
  models.register('tiny', cls, 'classifier', fixed={'width': 2})
  assert 'tiny' in models.names() and models.kind('tiny') == 'classifier'
  assert models.get('tiny', num_classes=4).width == 2
  with pytest.raises(errors.ConfigError, match=r"model 'tiny' fixes width=2; drop the argument width\.$"):
    models.get('tiny', width=8)
  with pytest.raises(errors.ConfigError, match=r"'tiny' is already registered.*replace=True"):
    models.register('tiny', cls, 'classifier')
  models.register('tiny', cls, 'generator', replace=True)
  assert models.kind('tiny') == 'generator'
  with pytest.raises(errors.ConfigError, match=r"kind 'classfier' is not one of classifier, generator"):
    models.register('tiny2', cls, 'classfier')
  with pytest.raises(errors.ConfigError, match=r'is not a flax.linen.Module subclass'):
    models.register('tiny2', cls(), 'classifier')
  with pytest.raises(errors.ConfigError, match=r"fixed argument\(s\) depth are not fields of TinyNet"):
    models.register('tiny2', cls, 'classifier', fixed={'depth': 2})
  with pytest.raises(errors.ConfigError, match=r"without ':'"):
    models.register('a:b', cls, 'classifier')


def test_user_loss_by_import_path_composes(user_pkg):
  composite = kd_jax.losses.compose([('tests_pkg.mod:my_loss', 1.0, {})])
  s = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  t = jnp.array([[0.0, 0.0], [2.0, 2.0]])
  total, terms = composite({'student_logits': s, 'teacher_logits': t}, 0)
  np.testing.assert_allclose(total, np.mean([(1 + 4) / 2, (4 + 4) / 2]), rtol=1e-6)
  assert set(terms) == {'my_loss', 'my_loss/raw'}  # labelled by the function's name
  loss = kd_jax.losses.get('tests_pkg.mod:my_loss')
  assert loss.roles == ('student_logits', 'teacher_logits')
  assert loss.hyperparameters == {'temperature': 1.0}
  hot = kd_jax.losses.compose([('tests_pkg.mod:my_loss', 2.0, {'temperature': 2.0})])
  np.testing.assert_allclose(hot({'student_logits': s, 'teacher_logits': t}, 0)[0], 2 * 13 / 16,
                             rtol=1e-6)


def test_user_loss_errors(user_pkg):
  with pytest.raises(errors.ConfigError, match=r"must have no defaults.*after '\*'; fix temperature"):
    kd_jax.losses.get('tests_pkg.mod:defaulted_loss')
  with pytest.raises(errors.ConfigError, match=r"is 3, not a function"):
    kd_jax.losses.get('tests_pkg.mod:NOT_A_CLASS')
  with pytest.raises(errors.ConfigError, match=r"no attribute 'my_los'.*did you mean 'my_loss'"):
    kd_jax.losses.compose([('tests_pkg.mod:my_los', 1.0)])
  with pytest.raises(errors.ConfigError, match=r"unknown loss 'xyz'; known: .*'pkg.module:function'"):
    kd_jax.losses.get('xyz')


def test_field_context_prefixes_the_same_error_type():
  mesh = parallel.make_mesh()
  n = mesh.devices.size
  with pytest.raises(errors.ConfigError) as info:
    with config_utils.field_context('config.data.batch_size'):
      parallel.check_global_batch(n + 1, mesh)
  assert str(info.value).startswith(f'config.data.batch_size: global batch size {n + 1} is not '
                                    f'divisible by the {n} devices')
  assert info.value.__cause__ is None and info.value.__suppress_context__
  with pytest.raises(errors.CheckpointError, match=r'^config.teacher: gone$'):
    with config_utils.field_context('config.teacher'):
      raise errors.CheckpointError('gone')
  with pytest.raises(KeyError):  # only kd_jax's user errors are relabelled
    with config_utils.field_context('config.x'):
      raise KeyError('x')
  # The old positional `field` still prefixes, until every caller uses field_context.
  with pytest.raises(errors.ConfigError, match=r'^config.data.batch_size: global batch size'):
    parallel.check_global_batch(n + 1, mesh, 'config.data.batch_size')


# ---------------------------------------------------------------------------------------------
# The README's "Extending kd_jax" examples, run exactly as written there.

def _readme_example(name: str) -> str:
  import os  # pylint: disable=import-outside-toplevel
  import re  # pylint: disable=import-outside-toplevel
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'README.md')) as f:
    text = f.read()
  match = re.search(r'<!-- example: ' + re.escape(name) + r' -->\n```python\n(.*?)```', text, re.S)
  assert match, f'README lost its {name} example'
  return match.group(1)


def test_readme_out_of_tree_model_loss_and_config_run_through_launch(tmp_path, tiny_data_dir,
                                                                      teacher_workdir):
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  pkg = tmp_path / 'my_kd'
  pkg.mkdir()
  for name in ('models.py', 'losses.py', 'config.py'):
    (pkg / name).write_text(_readme_example(f'my_kd/{name}'))
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONPATH=str(tmp_path),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  proc = subprocess.run(
      [sys.executable, 'launch.py', f'--config={pkg / "config.py"}:tiny', f'--workdir={workdir}',
       f'--config.data.data_dir={tiny_data_dir}', f'--config.teacher.checkpoint={teacher_workdir}',
       '--config.total_steps=4'],
      cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'logit_l1=' in proc.stdout  # the user loss is a logged term, labelled by its name
  summary = json.loads((workdir / 'summary.json').read_text())
  # The flag overrides reached the run: 4 steps, not the tiny config's 6; the teacher evaluated.
  assert summary['step'] == 4 and 'step 4/4' in proc.stdout
  assert {'eval/student_top1', 'eval/teacher_top1', 'eval/agreement'} <= set(summary['eval'])
  assert f'done: summary at {workdir}/summary.json' in proc.stdout
  assert summary['student']['model']['name'] == 'my_kd.models:TinyNet'
  # The user's config replaces kd_student's model: TinyNet at its default width 8 (conv 3·3·1·8+8,
  # features 3·3·8·16+16, head 16·10+10).
  assert summary['student']['params'] == (9 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 10 + 10)


def test_readme_notebook_example_runs(monkeypatch, tmp_path):
  """The config-free API example: the names it leaves undefined are the user's data and teacher."""
  pkg = tmp_path / 'my_kd'
  pkg.mkdir()
  (pkg / 'models.py').write_text(_readme_example('my_kd/models.py'))
  monkeypatch.syspath_prepend(str(tmp_path))
  from my_kd.models import TinyNet  # pylint: disable=import-outside-toplevel,import-error
  teacher = TinyNet(num_classes=10, width=16)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 256).astype(np.int32)
  images = (rng.random((256, 12, 12, 1)) * 60 + labels[:, None, None, None] * 19).astype(np.uint8)
  teacher_vars = teacher.init(jax.random.key(1), jnp.zeros((1, 12, 12, 1)))
  before = jax.tree.map(np.array, teacher_vars)
  namespace = {'TinyNet': TinyNet, 'teacher_module': teacher, 'teacher_vars': teacher_vars,
               'images': images, 'labels': labels}
  exec(_readme_example('notebook'), namespace)  # pylint: disable=exec-used
  student_vars, history = namespace['student_vars'], namespace['history']
  assert history[-1]['step'] == 100 and {'kd', 'ce', 'kd/raw', 'agreement'} <= set(history[-1])
  logits = TinyNet(num_classes=10).apply(student_vars, jnp.zeros((2, 12, 12, 1)), train=False)
  assert logits.shape == (2, 10)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_vars))
