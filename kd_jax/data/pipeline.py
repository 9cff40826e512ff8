"""Grain pipelines: an endless shuffled train stream and a padded single eval pass, split over processes.

Both follow one rule: global batch b is the records at (shuffled) positions [b*G, (b+1)*G), and process
p of P takes the contiguous slice [p*L, (p+1)*L) of it (L = G/P). So the global batches, and hence a
training run, do not depend on how many processes read them.

Each grain element is one whole local batch: its positions are computed with numpy and, for an
`InMemorySource`, gathered with one fancy index. Per-record grain elements cost ~20-40 us each in
Python (shuffle index, map, stack), which capped the cached pipeline at ~30-60k images/s on one core.
Batches stay uint8 numpy; normalisation and augmentation run on device (see `augment.py`).
"""
import sys
from typing import Any, Callable, Iterator, Sequence

from absl import flags
import grain
import numpy as np

from kd_jax import errors
from kd_jax.data.sources import InMemorySource

Record = dict[str, Any]


class _EpochShuffle:
  """Record index at global position i: epoch i // n is a permutation of range(n) drawn from (seed, epoch).

  Holds the permutations of the last few epochs; a batch needs at most two (it may straddle a boundary).
  """

  def __init__(self, num_records: int, seed: int):
    self._n = num_records
    self._seed = seed % 2**64  # numpy seeds must be non-negative; any int seed is fine here
    self._cache: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._cache.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self._seed, epoch]).permutation(self._n)
      # Threads may race here; both compute the same array, so either assignment is fine.
      self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 2}
      self._cache[epoch] = perm
    return perm

  def __call__(self, positions: np.ndarray) -> np.ndarray:
    epochs, offsets = np.divmod(positions, self._n)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      out[where] = self._permutation(int(epoch))[offsets[where]]
    return out


class _LocalBatches(grain.MapDataset):
  """Element b: this process's slice of global batch b, read from `source`.

  Training passes `order` (positions -> shuffled record indices) and no end. Evaluation passes
  `num_positions` instead: records are read in order, and positions past the end are padding that
  reads record 0 and gets `mask` 0.
  """

  def __init__(self, source: Any, *, global_batch_size: int, process_index: int,
               process_count: int, keys: tuple[str, ...], num_batches: int,
               order: Callable[[np.ndarray], np.ndarray] | None = None,
               num_positions: int | None = None):
    super().__init__()
    self._source = source
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local
    self._keys = keys
    self._order = order
    self._num_batches = num_batches
    self._num_positions = num_positions

  def __len__(self) -> int:
    return self._num_batches

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    positions = index * self._global + self._offset + np.arange(self._local, dtype=np.int64)
    if self._order is not None:
      return _gather(self._source, self._order(positions), self._keys)
    real = positions < self._num_positions
    batch = _gather(self._source, np.where(real, positions, 0), self._keys)
    batch['mask'] = real.astype(np.float32)
    return batch

  def __str__(self) -> str:
    return f'_LocalBatches(global={self._global}, local={self._local}, offset={self._offset})'


def train_iterator(source: grain.sources.RandomAccessDataSource, *, global_batch_size: int,
                   seed: int, process_index: int, process_count: int,
                   keys: Sequence[str] = ('image', 'label'), read_threads: int = 0,
                   worker_count: int = 0) -> grain.DatasetIterator:
  """Endless, deterministic stream of this process's slices of shuffled global batches.

  Every epoch is a fresh permutation drawn from (seed, epoch); global batches run across epoch
  boundaries. The iterator's `get_state()` is a small JSON-able dict; `set_state()` on a new
  iterator over the same source and arguments continues exactly there.

  Args:
    source: random-access source of dict records (see `sources.get_source`).
    global_batch_size: G, examples per step summed over all processes.
    seed: shuffle seed.
    process_index: this process, in [0, process_count) (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`); must divide G.
    keys: record fields to keep; `'index'` adds each record's position in the split (int32).
    read_threads: grain threads preparing batches ahead (0: in the calling thread). PNG decoding
      holds the GIL, so threads help little; use `worker_count` for a decode-bound source.
    worker_count: grain worker processes (`mp_prefetch`); 0: none.

  Returns:
    Iterator of dicts of numpy arrays with leading dim L = G / process_count; `label` is int32,
    `image` keeps its dtype (uint8).

  Raises:
    ConfigError: bad batch size / process layout, empty split, or a key the records do not have.
  """
  _local_batch_size(global_batch_size, process_index, process_count)
  _check_keys(source, keys)
  batches = _LocalBatches(
      source, global_batch_size=global_batch_size, process_index=process_index,
      process_count=process_count, keys=tuple(keys), num_batches=sys.maxsize // global_batch_size,
      order=_EpochShuffle(len(source), seed))
  iter_ds = batches.to_iter_dataset(grain.ReadOptions(num_threads=read_threads))
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
  _local_batch_size(global_batch_size, process_index, process_count)
  num = len(source)
  if num == 0:
    return iter(())
  _check_keys(source, keys)
  batches = _LocalBatches(
      source, global_batch_size=global_batch_size, process_index=process_index,
      process_count=process_count, keys=tuple(keys), num_batches=-(-num // global_batch_size),
      num_positions=num)
  return iter(batches.to_iter_dataset(grain.ReadOptions(num_threads=read_threads)))


INDEX = 'index'


def _gather(source: Any, indices: np.ndarray, keys: tuple[str, ...]) -> Record:
  # `index` is the record's position in the split (not a stored field): CRD's memory bank is
  # addressed by it.
  fields = tuple(k for k in keys if k != INDEX)
  if isinstance(source, InMemorySource):
    batch = {k: source.arrays[k][indices] for k in fields}
  else:
    records = [source[int(i)] for i in indices]
    batch = {k: np.stack([np.asarray(r[k]) for r in records]) for k in fields}
  if INDEX in keys:
    batch[INDEX] = indices.astype(np.int32)
  if 'label' in batch:
    # TFDS stores labels as int64; JAX without x64 would truncate them silently (with a warning).
    batch['label'] = batch['label'].astype(np.int32)
  return batch


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
    raise errors.ConfigError(
        f'global_batch_size must be a positive integer, got {global_batch_size!r}; pass a positive '
        'batch size.')
  if not 0 <= process_index < process_count:
    raise errors.ConfigError(
        f'process_index {process_index} is not in [0, process_count={process_count}); pass '
        'jax.process_index() and jax.process_count().')
  if global_batch_size % process_count:
    raise errors.ConfigError(
        f'global_batch_size {global_batch_size} is not divisible by the {process_count} processes; '
        f'use a global batch size that is a multiple of {process_count}.')
  return global_batch_size // process_count


def _check_keys(source: grain.sources.RandomAccessDataSource, keys: Sequence[str]) -> None:
  if len(source) == 0:
    raise errors.ConfigError('the dataset split is empty (0 records); choose a non-empty split.')
  record = source[0]
  missing = [k for k in keys if k not in record and k != INDEX]
  if missing:
    raise errors.ConfigError(
        f'records have fields {sorted(record)}, not {missing}; choose keys among those.')
