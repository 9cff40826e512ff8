"""Grain pipelines: an endless shuffled train stream and a padded single eval pass, split over processes.

Both follow one rule: global batch b is the records at (shuffled) positions [b*G, (b+1)*G), and process
p of P takes the contiguous slice [p*L, (p+1)*L) of it (L = G/P). So the global batches, and hence a
training run, do not depend on how many processes read them.
Batches stay uint8 numpy; normalisation and augmentation run on device (see `augment.py`).
"""
import functools
from typing import Any, Iterator, Sequence

from absl import flags
import grain
import numpy as np

from kd_jax import errors

Record = dict[str, Any]
# Grain needs shuffle seeds in [0, 2**32); any int seed is folded into that range.
_SEED_RANGE = 2**32


class _ProcessSlice(grain.MapDataset):
  """One process's share of every global batch of `parent`, as a flat dataset of records.

  Local element j (local batch j // L, offset j % L) is parent element
  (j // L) * G + process_index * L + j % L. A final partial global batch is dropped.
  """

  def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local

  def _parent_index(self, index: int) -> int:
    batch, within = divmod(index, self._local)
    return batch * self._global + self._offset + within

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._parent_index(index)]

  def _getitems(self, indices: Sequence[int]):
    return self._parent._getitems([self._parent_index(i) for i in indices])  # pylint: disable=protected-access

  def __str__(self) -> str:
    return f'_ProcessSlice(global={self._global}, local={self._local}, offset={self._offset})'


def train_iterator(source: grain.sources.RandomAccessDataSource, *, global_batch_size: int,
                   seed: int, process_index: int, process_count: int,
                   keys: Sequence[str] = ('image', 'label'), read_threads: int = 0,
                   worker_count: int = 0) -> grain.DatasetIterator:
  """Endless, deterministic stream of this process's slices of shuffled global batches.

  Every epoch is a fresh permutation drawn from `seed` (grain reseeds its shuffle per epoch); global
  batches run across epoch boundaries. The iterator's `get_state()` is a small JSON-able dict;
  `set_state()` on a new iterator over the same source and arguments continues exactly there.

  Args:
    source: random-access source of dict records (see `sources.get_source`).
    global_batch_size: G, examples per step summed over all processes.
    seed: shuffle seed (e.g. config.seed).
    process_index: this process, in [0, process_count) (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`); must divide G.
    keys: record fields to keep.
    read_threads: grain threads reading records (0: in the calling thread; threads help little
      with PNG decoding, which holds the GIL).
    worker_count: grain worker processes (`mp_prefetch`) for decode-bound pipelines; 0: none.

  Returns:
    Iterator of dicts of numpy arrays with leading dim L = G / process_count; `label` is int32,
    `image` keeps its dtype (uint8).

  Raises:
    ConfigError: bad batch size / process layout, or a key the records do not have.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count)
  _check_keys(source, keys)
  ds = grain.MapDataset.source(source).shuffle(seed=seed % _SEED_RANGE).repeat()
  ds = _ProcessSlice(ds, global_batch_size=global_batch_size, process_index=process_index,
                     process_count=process_count)
  ds = ds.map(functools.partial(_select, keys=tuple(keys))).batch(local).map(_labels_to_int32)
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads))
  if worker_count:
    if not flags.FLAGS.is_parsed():
      # Grain's worker processes read absl flags; outside absl.app (tests, notebooks) nothing parses
      # them, and their defaults are what we want.
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_ds)


def eval_batches(source: grain.sources.RandomAccessDataSource, *, global_batch_size: int,
                 process_index: int, process_count: int, keys: Sequence[str] = ('image', 'label'),
                 read_threads: int = 0) -> Iterator[Record]:
  """One in-order pass over `source` in equal-shaped batches, the last one padded.

  All ceil(N / G) global batches have G rows, so a jitted eval step compiles once; padding rows
  repeat record 0 and have `mask` 0. Each process gets its slice as in `train_iterator`, so the
  masked rows of all processes together are each record exactly once.

  Returns:
    Iterator of dicts: the `keys` fields (`label` int32) and `mask` float32 [L] (1 real, 0 padding).

  Raises:
    ConfigError: bad batch size / process layout, or a key the records do not have.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count)
  num = len(source)
  if num == 0:
    return iter(())
  _check_keys(source, keys)
  num_batches = -(-num // global_batch_size)
  ds = _ProcessSlice(grain.MapDataset.range(num_batches * global_batch_size),
                     global_batch_size=global_batch_size, process_index=process_index,
                     process_count=process_count)
  ds = ds.map(functools.partial(_padded_record, source=source, num=num, keys=tuple(keys)))
  ds = ds.batch(local).map(_labels_to_int32)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads)))


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
    raise errors.ConfigError(
        f'global_batch_size must be a positive integer, got {global_batch_size!r}; fix the batch '
        'size in the config.')
  if not 0 <= process_index < process_count:
    raise errors.ConfigError(
        f'process_index {process_index} is not in [0, process_count={process_count}); pass '
        'jax.process_index() and jax.process_count().')
  if global_batch_size % process_count:
    raise errors.ConfigError(
        f'global_batch_size {global_batch_size} is not divisible by the {process_count} processes; '
        f'set the batch size in the config to a multiple of {process_count}.')
  return global_batch_size // process_count


def _check_keys(source: grain.sources.RandomAccessDataSource, keys: Sequence[str]) -> None:
  if len(source) == 0:
    raise errors.ConfigError('the dataset split is empty; choose a non-empty split in the config.')
  record = source[0]
  missing = [k for k in keys if k not in record]
  if missing:
    raise errors.ConfigError(
        f'records have fields {sorted(record)}, not {missing}; choose keys among those.')


def _select(record: Record, keys: tuple[str, ...]) -> Record:
  return {k: record[k] for k in keys}


def _padded_record(position: int, *, source: grain.sources.RandomAccessDataSource, num: int,
                   keys: tuple[str, ...]) -> Record:
  real = position < num
  record = _select(source[position if real else 0], keys)
  record['mask'] = np.float32(real)
  return record


def _labels_to_int32(batch: Record) -> Record:
  # TFDS stores labels as int64; JAX without x64 would truncate them silently (with a warning).
  if 'label' in batch:
    batch['label'] = np.asarray(batch['label'], np.int32)
  return batch

