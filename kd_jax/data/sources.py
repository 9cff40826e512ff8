"""Random-access sources of examples: prepared TFDS datasets (array_record), optionally decoded into RAM.

A dataset that is not prepared yet is built on first use: `fashion_mnist` offline from local IDX files,
anything else by TFDS's download. Concurrent first uses (several processes of one run, or several
runs) build it once; the others wait and then read it.
"""
import contextlib
import fcntl
import logging
import os
import re
import socket
import time
from typing import Any, Iterator, Mapping, NamedTuple

import grain
import numpy as np
import tensorflow_datasets as tfds

from kd_jax import errors
from kd_jax.data import fashion_mnist

# Splits whose decoded arrays fit in this many bytes are cached in RAM unless told otherwise
# (Fashion-MNIST train: 47 MB, CIFAR-10 train: 154 MB).
CACHE_LIMIT_BYTES = 2 * 2**30
# How long a process waits for process 0 to build a dataset on a storage without file locks.
_REMOTE_BUILD_TIMEOUT_S = 3600.0


class DatasetInfo(NamedTuple):
  """What a model and a trainer need to know about an image-classification dataset."""
  image_shape: tuple[int, int, int]
  num_classes: int
  num_train: int
  num_test: int


class InMemorySource:
  """A split decoded once into numpy arrays, so later epochs cost no decoding.

  Implements grain's random-access protocol; the pipelines gather whole batches from `arrays`.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
      raise ValueError(f'all arrays need the same length, got {lengths}')
    self.arrays = dict(arrays)
    self._len = next(iter(lengths.values()), 0)

  @classmethod
  def read(cls, source: grain.sources.RandomAccessDataSource, chunk_size: int = 1024
           ) -> 'InMemorySource':
    """Reads and decodes every record of `source` once (Fashion-MNIST train: ~60k records, seconds)."""
    # Grain's thread pool barely helps here (PNG decoding holds the GIL), so read sequentially.
    chunks = grain.MapDataset.source(source).batch(chunk_size).to_iter_dataset(
        grain.ReadOptions(num_threads=0))
    chunks = list(chunks)
    if not chunks:
      return cls({})
    return cls({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.arrays.items()}

  def __repr__(self) -> str:
    shapes = {k: (v.shape, str(v.dtype)) for k, v in self.arrays.items()}
    return f'InMemorySource({shapes})'


class PaddedSource:
  """`source` with every image zero-padded (centred) to size × size, e.g. Fashion-MNIST's 28 px to
  the 32 px a power-of-two generator makes; zero is its black background, so nothing is invented."""

  def __init__(self, source: Any, size: int):
    self.source, self.size = source, int(size)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = dict(self.source[index])
    record['image'] = pad_image(np.asarray(record['image']), self.size)
    return record

  def __repr__(self) -> str:
    return f'PaddedSource({self.source!r}, size={self.size})'


def pad_image(image: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads the two spatial axes before the last (HWC or NHWC) to size × size, centred."""
  h, w = image.shape[-3:-1]
  if h > size or w > size:
    raise errors.ConfigError(f'config.data.pad_to={size} is smaller than the images ({h}×{w}); '
                             f'set it to at least {max(h, w)}, or 0 for no padding.')
  pads = [(0, 0)] * image.ndim
  pads[-3] = ((size - h) // 2, size - h - (size - h) // 2)
  pads[-2] = ((size - w) // 2, size - w - (size - w) // 2)
  return np.pad(image, pads)


def pad_source(source: Any, size: int) -> Any:
  """`source` with images padded to size × size (an in-memory split is padded once, up front)."""
  if isinstance(source, InMemorySource):
    arrays = dict(source.arrays)
    if 'image' in arrays:
      arrays['image'] = pad_image(arrays['image'], size)
    return InMemorySource(arrays)
  pad_image(np.asarray(source[0]['image']), size)  # a too-small size fails here, not mid-run
  return PaddedSource(source, size)


def get_source(name: str, split: str, *, data_dir: str | None = None,
               cache_in_memory: bool | None = None) -> grain.sources.RandomAccessDataSource:
  """Returns a random-access source of one split of a TFDS dataset, preparing it if needed.

  Args:
    name: TFDS dataset name, e.g. 'fashion_mnist', 'mnist', 'cifar10'.
    split: TFDS split, e.g. 'train', 'test', 'train[:90%]'.
    data_dir: TFDS data dir; None means TFDS's default.
    cache_in_memory: decode the whole split once into RAM (`InMemorySource`). None: only if the
      decoded split is at most `CACHE_LIMIT_BYTES`.

  Returns:
    A source whose records are dicts of numpy arrays (e.g. `image` uint8 [H,W,C], `label` int64 []).

  Raises:
    ConfigError: `name` is not a TFDS dataset, or `split` is not one of its splits.
    DatasetUnavailableError: the dataset is not prepared and cannot be built here.
  """
  builder = _prepared_builder(name, data_dir)
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise errors.DatasetUnavailableError(
        f"dataset '{name}' in {builder.data_dir} was prepared as {builder.info.file_format.value}, "
        'which has no random access; delete that directory (kd_jax prepares it again as '
        'array_record) or pass another data_dir.') from e
  except ValueError as e:
    if 'split' not in str(e).lower():
      raise
    raise errors.ConfigError(
        f"unknown split '{split}' of dataset '{name}': {e} Use one of those splits.") from None
  except Exception as e:  # pylint: disable=broad-except
    # array_record/riegeli raise RuntimeError (or worse) for truncated, emptied or missing files.
    raise _damaged(name, builder.data_dir, e) from e
  if cache_in_memory is None:
    cache_in_memory = len(source) * _decoded_record_bytes(builder) <= CACHE_LIMIT_BYTES
  try:
    if cache_in_memory:
      started = time.perf_counter()
      source = InMemorySource.read(source)
      logging.info('Decoded %s[%s] into memory in %.1f s.', name, split,
                   time.perf_counter() - started)
    elif len(source):
      source[0], source[len(source) - 1]  # pylint: disable=pointless-statement  # both ends readable
  except Exception as e:  # pylint: disable=broad-except
    raise _damaged(name, builder.data_dir, e) from e
  return source


def _damaged(name: str, directory: Any, e: BaseException) -> errors.DatasetUnavailableError:
  return errors.DatasetUnavailableError(
      f"the prepared dataset '{name}' in {directory} cannot be read ({type(e).__name__}: "
      f'{_first_line(e)}); it is damaged or incomplete: delete {directory} (kd_jax prepares it '
      'again) or pass another data_dir.')


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
  """Image shape, number of classes and split sizes of a dataset, preparing it if needed.

  A missing 'train' or 'test' split counts as 0 examples.

  Raises:
    ConfigError: unknown dataset, or it has no fixed-size `image` and class `label` features.
    DatasetUnavailableError: the dataset is not prepared and cannot be built here.
  """
  info = _prepared_builder(name, data_dir).info
  features = info.features
  image = features['image'] if 'image' in features else None
  label = features['label'] if 'label' in features else None
  shape = tuple(getattr(image, 'shape', ()) or ())
  if len(shape) != 3 or None in shape or not hasattr(label, 'num_classes'):
    raise errors.ConfigError(
        f"dataset '{name}' is not an image-classification dataset with "
        f"fixed-size 'image' and class 'label' features (it has {sorted(features.keys())}); "
        "use e.g. 'fashion_mnist', 'mnist' or 'cifar10'.")
  sizes = {s: info.splits[s].num_examples if s in info.splits else 0 for s in ('train', 'test')}
  return DatasetInfo(shape, label.num_classes, sizes['train'], sizes['test'])


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  if not isinstance(name, str) or not name:
    raise errors.ConfigError(f"dataset name {name!r} must be a TFDS dataset name such as "
                             "'fashion_mnist', 'mnist' or 'cifar10'.")
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise errors.ConfigError(
        f"unknown dataset '{name}'; use a TFDS dataset name such as "
        "'fashion_mnist', 'mnist' or 'cifar10'.") from None
  except Exception as e:  # pylint: disable=broad-except
    # e.g. a truncated dataset_info.json of a prepared dataset (TFDS raises a protobuf ParseError).
    where = os.path.join(data_dir or os.fspath(tfds.core.constants.DATA_DIR), name.split('/')[0])
    raise _damaged(name, where, e) from e


def check_data_dir(data_dir: str | None) -> None:
  """ConfigError when `data_dir` cannot be a TFDS data dir: a file, or a directory of other things.

  A directory of unrelated files is refused rather than filled with a dataset: it is more likely a
  wrong path than a place the user wants TFDS datasets in.
  """
  if not data_dir or '://' in data_dir:
    return
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise errors.ConfigError(
        f"data_dir={data_dir!r} is a file, not a directory; pass a TFDS data dir (created if "
        "missing) or '' for TFDS's default.")
  try:
    entries = sorted(e for e in os.listdir(data_dir) if not e.startswith('.'))
  except OSError:
    return  # missing (created later) or unreadable (reported when read)
  if entries and not any(_looks_like_tfds(os.path.join(data_dir, e)) for e in entries):
    shown = ', '.join(entries[:3]) + (', ...' if len(entries) > 3 else '')
    raise errors.ConfigError(
        f'data_dir={data_dir!r} holds no TFDS datasets but other files ({shown}); pass a TFDS data '
        'dir (one holding <dataset>/<version>/), a new or empty directory (kd_jax prepares the '
        "dataset there) or '' for TFDS's default.")


def _looks_like_tfds(path: str) -> bool:
  """A dataset directory (`<name>/<version>/`, possibly empty or mid-build) or TFDS's downloads."""
  if not os.path.isdir(path):
    return False
  if os.path.basename(path) in ('downloads', 'manual'):
    return True
  try:
    children = os.listdir(path)
  except OSError:
    return False
  return not children or any(re.fullmatch(r'\d+\.\d+\.\d+', c) or c.startswith('incomplete.')
                             for c in children)


def dataset_dir(name: str, data_dir: str | None = None) -> str:
  """The prepared dataset's directory (`<data_dir>/<name>/<version>`): where files derived from it,
  such as a teacher-output cache, are kept beside it."""
  return os.fspath(_prepared_builder(name, data_dir).data_dir)


def _prepared_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Returns the dataset's builder after making sure its files exist (building them at most once)."""
  check_data_dir(data_dir)
  builder = _builder(name, data_dir)
  if builder.is_prepared():
    return builder
  root = os.fspath(builder.data_dir_root)
  with _build_lock(root, name, lambda: _builder(name, data_dir).is_prepared()):
    if _builder(name, data_dir).is_prepared():  # another process built it while we waited
      return _builder(name, data_dir)
    _keep_tensorflow_off_accelerators()
    _build(builder, name, data_dir, root)
  # A fresh builder reads the DatasetInfo (splits, file format) just written.
  return _builder(name, data_dir)


def _build(builder: tfds.core.DatasetBuilder, name: str, data_dir: str | None, root: str) -> None:
  if name == 'fashion_mnist':
    idx_dir = fashion_mnist.idx_dir()
    # Chosen explicitly (the variable) or partly there: the files are meant to be used, so a
    # missing or damaged one is an error, not a reason to try the download.
    if (fashion_mnist.idx_files_present(idx_dir) or os.environ.get(fashion_mnist.IDX_DIR_ENV)
        or fashion_mnist.idx_files_found(idx_dir)):
      logging.info('Building fashion_mnist into %s from the IDX files in %s.', root, idx_dir)
      fashion_mnist.build(data_dir, idx_dir)
      return
    how_to = f'No IDX files in {idx_dir}: {fashion_mnist.HOW_TO_GET}.'
  else:
    how_to = (f"Prepare it where internet works (tfds.builder('{name}').download_and_prepare("
              "file_format='array_record')), copy that TFDS data dir here and pass it "
              'as data_dir.')
  # (Under `tfds.testing.mock_data` the download is patched out and needs no network.)
  mocked = getattr(builder.download_and_prepare, '__module__', '').startswith(
      'tensorflow_datasets.testing')
  if not mocked and not _network_reachable():
    raise errors.DatasetUnavailableError(
        f"dataset '{name}' is not prepared in {root} and this machine cannot reach the internet to "
        f'download it. {how_to}')
  logging.warning("Dataset '%s' is not prepared in %s; trying the TFDS download (without network "
                  'this fails after a few minutes of retries).', name, root)
  try:
    builder.download_and_prepare(file_format='array_record')
  except Exception as e:  # pylint: disable=broad-except
    # Downloads fail in many ways (DNS, HTTP, checksums, quota); the fix is the same for all.
    raise errors.DatasetUnavailableError(
        f"dataset '{name}' is not prepared in {root} and the TFDS download failed "
        f'({type(e).__name__}: {_first_line(e)}). {how_to}') from e


@contextlib.contextmanager
def _build_lock(root: str, name: str, is_prepared) -> Iterator[None]:
  """Lets one process at a time build `name` under `root`; the others block until it is done.

  On a file system, an exclusive `flock` on a file next to the datasets works across processes of
  one host and, on NFS, across hosts; hosts with separate local disks each build their own copy.
  Object stores (gs://...) have no locks: there process 0 builds and the others poll for the result.
  """
  if '://' in root:
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_index() != 0:
      _wait_for(is_prepared, name, root)
    yield
    return
  try:
    os.makedirs(root, exist_ok=True)
    lock_file = open(os.path.join(root, f'.{name}.kd_jax_build.lock'), 'a')  # pylint: disable=consider-using-with
  except OSError as e:
    raise errors.ConfigError(
        f'data_dir={root!r} cannot be created or written ({e.strerror or e}); pass a directory '
        "you can write, or '' for TFDS's default.") from None
  with lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info("Waiting for another process building '%s' in %s.", name, root)
      fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def _wait_for(is_prepared, name: str, root: str, timeout_s: float = _REMOTE_BUILD_TIMEOUT_S,
              poll_s: float = 5.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not is_prepared():
    if time.monotonic() > deadline:
      raise errors.DatasetUnavailableError(
          f"dataset '{name}' did not appear in {root} within {timeout_s:.0f} s while process 0 was "
          'to build it; check process 0\'s log, or prepare the dataset before starting the run.')
    time.sleep(poll_s)


def _network_reachable(host: str = 'storage.googleapis.com', timeout_s: float = 5.0) -> bool:
  """Whether a TFDS download could start; without network TFDS retries for minutes before failing.

  Behind a proxy (HTTP(S)_PROXY set) a direct connection says nothing, so the download is tried.
  """
  if any(k.lower() in ('https_proxy', 'http_proxy', 'all_proxy') for k in os.environ):
    return True
  try:
    socket.create_connection((host, 443), timeout=timeout_s).close()
    return True
  except OSError:
    return False


def _keep_tensorflow_off_accelerators() -> None:
  """TFDS encodes images with TensorFlow while building; stop TF from claiming GPU memory JAX needs."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass  # TF already initialised its devices earlier in this process; too late to change.


def _decoded_record_bytes(builder: tfds.core.DatasetBuilder) -> int:
  """Bytes of one decoded record's fixed-size tensors (variable-size ones count as 0)."""
  total = 0
  for info in _flatten(builder.info.features.get_tensor_info()):
    if info.shape is not None and None not in info.shape:
      total += int(np.prod(info.shape)) * np.dtype(info.np_dtype).itemsize
  return total


def _flatten(tree: Any) -> list[Any]:
  if isinstance(tree, Mapping):
    return [leaf for v in tree.values() for leaf in _flatten(v)]
  return [tree]


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0][:300] if text else 'no message'
