"""Shared fixtures. 8 virtual CPU devices for every test (set before jax is imported)."""
import contextlib
import fcntl
import gzip
import os
import shutil
import sys
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Most tests compile the same tiny programs (the same student step under several configs, the
# same run again to resume it, subprocesses that repeat an in-process run): XLA's persistent cache,
# shared by the xdist workers and the launch.py subprocesses (they inherit the environment), halves
# the suite's compile time. Keys hold the HLO, the devices and the jax version, so a cache left by
# an earlier run can only hit for an identical program.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'kd_jax_tests_jax_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)  # configs/ import their shared module as `configs.<dataset>.common`
DEBIAN_IDX = '/usr/share/datasets/fashion-mnist'
TINY_TRAIN, TINY_TEST = 512, 256
# State dicts of small random-weight PyTorch networks and the outputs their original code computed.
GOLDEN = os.path.join(REPO, '..', 'shared', 'golden')


def golden_file(name: str) -> str:
  """The path of a file in ../shared/golden; skips the test with the reason when it is absent."""
  path = os.path.join(GOLDEN, name)
  if not os.path.exists(path):
    pytest.skip(f'../shared/golden not found: {path} is missing (golden data of issue 11)')
  return path


def _read_idx_gz(path: str) -> np.ndarray:
  with gzip.open(path, 'rb') as f:
    raw = f.read()
  ndim = raw[3]
  shape = tuple(int(d) for d in np.frombuffer(raw[4:4 + 4 * ndim], dtype='>u4'))
  return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(shape)


def write_idx_gz(path: str, array: np.ndarray) -> None:
  header = bytes((0, 0, 0x08, array.ndim)) + np.asarray(array.shape, '>u4').tobytes()
  with gzip.open(path, 'wb') as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def make_tiny_idx(directory: str, n_train: int = TINY_TRAIN, n_test: int = TINY_TEST) -> str:
  """The first images of the real Fashion-MNIST when Debian's files are here, else random ones."""
  os.makedirs(directory, exist_ok=True)
  names = (('train', n_train), ('t10k', n_test))
  for prefix, n in names:
    img_src = os.path.join(DEBIAN_IDX, f'{prefix}-images-idx3-ubyte.gz')
    if os.path.exists(img_src):
      images = _read_idx_gz(img_src)[:n]
      labels = _read_idx_gz(os.path.join(DEBIAN_IDX, f'{prefix}-labels-idx1-ubyte.gz'))[:n]
    else:
      rng = np.random.default_rng(0)
      labels = rng.integers(0, 10, n).astype(np.uint8)
      images = (rng.random((n, 28, 28)) * 40 + labels[:, None, None] * 20).astype(np.uint8)
    write_idx_gz(os.path.join(directory, f'{prefix}-images-idx3-ubyte.gz'), images)
    write_idx_gz(os.path.join(directory, f'{prefix}-labels-idx1-ubyte.gz'), labels)
  return directory


def shared_dir(tmp_path_factory, name: str, build) -> str:
  """`build(path)` once per test session, its directory shared by every xdist worker.

  The first worker to ask builds it under a lock; the others wait and reuse it (xdist runs each
  session-scoped fixture once per worker otherwise: the tiny teachers would be trained twice).
  Tests only read what is built here; those that damage or resume a run copy it first.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the session's temp root, common to all workers
  path = root / f'shared_{name}'
  with open(root / f'shared_{name}.lock', 'w') as lock, contextlib.ExitStack() as stack:
    fcntl.flock(lock, fcntl.LOCK_EX)
    stack.callback(fcntl.flock, lock, fcntl.LOCK_UN)
    if not (path / '.built').exists():
      shutil.rmtree(path, ignore_errors=True)
      path.mkdir()
      build(path)
      (path / '.built').touch()
  return str(path)


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding a tiny `fashion_mnist` built by kd_jax's real offline builder."""
  from kd_jax.data import fashion_mnist  # pylint: disable=import-outside-toplevel

  def build(root):
    fashion_mnist.build(str(root / 'data'), make_tiny_idx(str(root / 'idx')))
  return os.path.join(shared_dir(tmp_path_factory, 'tfds', build), 'data')


def load_config(relpath: str, arg: str | None = None):
  """configs/<relpath>'s get_config(arg), loaded the way config_flags loads it."""
  from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
  return config_utils.load_config_file(os.path.join('configs', relpath), arg)


def tiny_config(relpath: str, data_dir: str, **fields):
  """The config's `tiny` variant on the tiny dataset, with dotted-path overrides."""
  from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
  config = load_config(relpath, 'tiny')
  config.data.data_dir = data_dir
  for key, value in fields.items():
    config_utils.set_dotted(config, key, value)
  return config


@pytest.fixture(scope='session')
def teacher_workdir(tiny_data_dir, tmp_path_factory) -> str:
  """A tiny classification teacher trained once per session."""
  from kd_jax.trainers import classification  # pylint: disable=import-outside-toplevel

  def build(root):
    classification.train_and_evaluate(tiny_config('fashion_mnist/teacher.py', tiny_data_dir),
                                      str(root / 'run'))
  return os.path.join(shared_dir(tmp_path_factory, 'teacher', build), 'run')


@pytest.fixture(autouse=True)
def _two_device_mesh(monkeypatch):
  """Trainer runs use 2 of the 8 virtual devices: sharded like a real run, cheaper to compile.

  Tests that need another device count (1 vs 8) patch `make_mesh` again themselves.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax import parallel  # pylint: disable=import-outside-toplevel
  real = parallel.make_mesh
  monkeypatch.setattr(parallel, 'make_mesh', lambda devices=None, **kw: real(
      jax.devices()[:2] if devices is None else devices, **kw))


class Preempted(Exception):
  """Raised by `preempting_iterator` in place of a batch: a preemption at a known step."""


def preempting_iterator(real_iterator, at: int):
  """A `data.train_iterator` stand-in whose `at`-th batch raises `Preempted` (state passes through)."""
  def make(*args, **kwargs):
    it, calls = real_iterator(*args, **kwargs), {'n': 0}

    class Wrapped:
      def __iter__(self):
        return self

      def __next__(self):
        calls['n'] += 1
        if calls['n'] == at:
          raise Preempted()
        return next(it)

      def get_state(self):
        return it.get_state()

      def set_state(self, state):
        it.set_state(state)
    return Wrapped()
  return make


def pooled_pixels(images):
  """A stand-in user feature function for `config.eval.feature_fn`: 4×4-average-pooled pixels."""
  b, h, w, _ = images.shape
  x = images[:, :h // 4 * 4, :w // 4 * 4, 0]
  return x.reshape(b, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).reshape(b, -1)


def flat_tree(tree) -> dict:
  """{key path: numpy array} of a pytree: what the tests compare exports and states with."""
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
