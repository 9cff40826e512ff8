"""Builds TFDS's `fashion_mnist` offline, from the IDX files of Debian's `dataset-fashion-mnist`.

TFDS's own builder downloads the IDX files and rejects local copies (their gzip checksums differ), so
we subclass it and change only how the files are obtained. Version, splits, features and example keys
are inherited, so the result is the same dataset TFDS would write and `tfds.data_source('fashion_mnist')`
reads it like any other.
"""
import gzip
import os
import shutil
import tempfile
import zlib

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from kd_jax import errors

IDX_DIR_ENV = 'KD_JAX_FASHION_MNIST_IDX_DIR'
DEFAULT_IDX_DIR = '/usr/share/datasets/fashion-mnist'
HOW_TO_GET = ('apt-get install dataset-fashion-mnist (or set KD_JAX_FASHION_MNIST_IDX_DIR), '
              'or run where TFDS downloads work')

# (split, images file, labels file), as named in the original Fashion-MNIST release.
_FILES = (
    ('train', 'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    ('test', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
)
_UBYTE = 0x08  # IDX type code for unsigned bytes.
_IMAGE_SHAPE = tfds_mnist.MNIST_IMAGE_SHAPE[:2]


def idx_dir() -> str:
  """The directory holding the IDX files: `$KD_JAX_FASHION_MNIST_IDX_DIR`, else Debian's location."""
  return os.environ.get(IDX_DIR_ENV) or DEFAULT_IDX_DIR


def idx_files_present(directory: str) -> bool:
  """Whether all four gzipped IDX files are in `directory`."""
  return all(os.path.isfile(os.path.join(directory, name))
             for _, images, labels in _FILES for name in (images, labels))


def idx_files_found(directory: str) -> list[str]:
  """Those of the four gzipped IDX files that are in `directory`."""
  return [name for _, images, labels in _FILES for name in (images, labels)
          if os.path.isfile(os.path.join(directory, name))]


def check_idx_gz(path: str) -> tuple[int, ...]:
  """Returns the dimensions of a gzipped IDX file of unsigned bytes after reading all of it.

  Raises:
    DatasetUnavailableError: not gzip, truncated (compressed stream or IDX payload), or not IDX.
  """
  fix = f'reinstall the Fashion-MNIST files ({HOW_TO_GET})'
  try:
    with gzip.open(path, 'rb') as f:
      magic = f.read(4)
      if len(magic) != 4 or magic[:3] != bytes((0, 0, _UBYTE)):
        raise errors.DatasetUnavailableError(
            f'{path} is not a gzipped IDX file of unsigned bytes; {fix}.')
      header = f.read(4 * magic[3])
      shape = tuple(int(d) for d in np.frombuffer(header, dtype='>u4'))
      size = 0
      while chunk := f.read(1 << 22):
        size += len(chunk)
  except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
    raise errors.DatasetUnavailableError(
        f'{path} is truncated or corrupt ({type(e).__name__}: {e}); {fix}.') from None
  if len(shape) != magic[3] or size != int(np.prod(shape)):
    raise errors.DatasetUnavailableError(
        f'{path} is truncated or corrupt (header says {shape}, {size} bytes of data follow); '
        f'{fix}.')
  return shape


def read_idx_header(path: str) -> tuple[int, ...]:
  """Returns the dimensions in the header of an uncompressed IDX file of unsigned bytes.

  Also checks the file holds exactly that many bytes, so a truncated file fails here with a clear
  message instead of deep inside TFDS.
  """
  with open(path, 'rb') as f:
    magic = f.read(4)
    if len(magic) != 4 or magic[:3] != bytes((0, 0, _UBYTE)):
      raise errors.DatasetUnavailableError(
          f'{path} is not an IDX file of unsigned bytes; reinstall the Fashion-MNIST files '
          f'({HOW_TO_GET}).')
    ndim = magic[3]
    shape = tuple(int(d) for d in np.frombuffer(f.read(4 * ndim), dtype='>u4'))
  expected_size = 4 + 4 * ndim + int(np.prod(shape))
  if len(shape) != ndim or os.path.getsize(path) != expected_size:
    raise errors.DatasetUnavailableError(
        f'{path} is truncated or corrupt (header says {shape}); reinstall the Fashion-MNIST files '
        f'({HOW_TO_GET}).')
  return shape


def _split_size(images_path: str, labels_path: str) -> int:
  """Number of examples of one split, after checking both files agree with each other."""
  images_shape = read_idx_header(images_path)
  labels_shape = read_idx_header(labels_path)
  if (images_shape[1:] != _IMAGE_SHAPE or len(labels_shape) != 1
      or images_shape[0] != labels_shape[0]):
    raise errors.DatasetUnavailableError(
        f'{images_path} holds images {images_shape} and {labels_path} labels {labels_shape}; '
        f'expected [N, 28, 28] and [N]. Reinstall the Fashion-MNIST files ({HOW_TO_GET}).')
  return images_shape[0]


class OfflineFashionMNIST(tfds_mnist.FashionMNIST, skip_registration=True):
  """TFDS's FashionMNIST builder, reading the gzipped IDX files from a local directory.

  `skip_registration` keeps TFDS's registered `fashion_mnist` in charge of reading; this class only
  writes. The split sizes come from the IDX headers, so a tiny fake set works in tests.
  """

  name = 'fashion_mnist'

  def __init__(self, *, idx_dir: str, **kwargs):  # pylint: disable=redefined-outer-name
    self._idx_dir = idx_dir
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    # TFDS's extractor gunzips into the download dir; the inherited `_generate_examples` then reads
    # the raw IDX exactly as the online builder does, so the written records are the same.
    generators = []
    for split, images, labels in _FILES:
      paths = dl_manager.extract({
          'data_path': os.path.join(self._idx_dir, images),
          'label_path': os.path.join(self._idx_dir, labels),
      })
      paths = {k: os.fspath(v) for k, v in paths.items()}
      num_examples = _split_size(paths['data_path'], paths['label_path'])
      generators.append(tfds.core.SplitGenerator(
          name=split, gen_kwargs=dict(num_examples=num_examples, **paths)))
    return generators

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
  # prepared" in bold to stdout; nothing is downloaded here and `build` prints its own two lines.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass


def build(data_dir: str | None, source_dir: str | None = None) -> None:
  """Writes `fashion_mnist` as array_record into `data_dir` from the IDX files in `source_dir`.

  TFDS writes into a temporary directory and renames it when complete, so a crash never leaves a
  dataset that looks prepared. Callers serialise concurrent builds (see `sources.py`).

  Args:
    data_dir: TFDS data dir (None: TFDS's default).
    source_dir: directory of the four `*-ubyte.gz` files (None: `idx_dir()`).

  Raises:
    DatasetUnavailableError: the IDX files are missing or corrupt.
  """
  source_dir = source_dir or idx_dir()
  if not idx_files_present(source_dir):
    missing = sorted({n for _, i, l in _FILES for n in (i, l)} - set(idx_files_found(source_dir)))
    raise errors.DatasetUnavailableError(
        f"fashion_mnist: IDX files {', '.join(missing)} not found in {source_dir}; {HOW_TO_GET}.")
  # Every file is read once before TFDS starts, so a damaged one is named here and nothing is
  # written; TFDS's own extractor would fail with a trace half-way through the build.
  for split, images, labels in _FILES:
    images_shape = check_idx_gz(os.path.join(source_dir, images))
    labels_shape = check_idx_gz(os.path.join(source_dir, labels))
    if (images_shape[1:] != _IMAGE_SHAPE or len(labels_shape) != 1
        or images_shape[0] != labels_shape[0]):
      raise errors.DatasetUnavailableError(
          f'{split}: {images} holds images {images_shape} and {labels} labels {labels_shape} in '
          f'{source_dir}; expected [N, 28, 28] and [N]. Reinstall the Fashion-MNIST files '
          f'({HOW_TO_GET}).')
  builder = OfflineFashionMNIST(idx_dir=source_dir, data_dir=data_dir)
  root = os.fspath(builder.data_dir_root)
  os.makedirs(root, exist_ok=True)
  # The gunzipped copies are only needed while writing; keep them out of the data dir afterwards.
  scratch = tempfile.mkdtemp(prefix='.kd_jax_fashion_mnist_', dir=root)
  print(f'[kd_jax] building the fashion_mnist TFDS dataset in {root} from {source_dir} (once)',
        flush=True)
  try:
    builder.download_and_prepare(download_dir=scratch, file_format='array_record')
  except errors.KDError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # TFDS wrote into `incomplete.*` and removes it on failure: nothing half-built looks prepared.
    raise errors.DatasetUnavailableError(
        f'fashion_mnist: building it in {root} from {source_dir} failed ({type(e).__name__}: '
        f'{" ".join(str(e).split())[:300]}); check the IDX files ({HOW_TO_GET}) and free space '
        'in the data dir.') from e
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  print(f'[kd_jax] fashion_mnist is ready in {builder.data_dir}', flush=True)
