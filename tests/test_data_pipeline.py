"""kd_jax.data pipelines: determinism, per-epoch reshuffle, process slicing, resume, eval padding."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kd_jax import errors
from kd_jax.data import InMemorySource, eval_batches, train_iterator

N = 12


def numbered_source(n: int = N) -> InMemorySource:
  """Record i has every pixel and its label equal to i, so batches show which records they hold."""
  ids = np.arange(n)
  return InMemorySource({'image': np.broadcast_to(ids[:, None, None, None], (n, 2, 2, 1)
                                                  ).astype(np.uint8),
                         'label': ids.astype(np.int64),
                         'extra': ids.astype(np.float32)})


def ids(batch) -> list[int]:
  assert np.all(batch['image'] == batch['label'][:, None, None, None])
  return batch['label'].tolist()


def take(it, k: int) -> list[list[int]]:
  return [ids(next(it)) for _ in range(k)]


def train(seed=0, batch=4, process_index=0, process_count=1, source=None, **kwargs):
  return train_iterator(source or numbered_source(), global_batch_size=batch, seed=seed,
                        process_index=process_index, process_count=process_count, **kwargs)


def test_batches_are_uint8_images_and_int32_labels_of_local_size():
  batch = next(train(batch=6, process_index=1, process_count=3))
  assert set(batch) == {'image', 'label'}
  assert batch['image'].dtype == np.uint8 and batch['image'].shape == (2, 2, 2, 1)
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (2,)


def test_same_seed_same_stream_other_seed_other_stream():
  assert take(train(seed=3), 6) == take(train(seed=3), 6)
  assert take(train(seed=3), 6) != take(train(seed=4), 6)
  assert take(train(seed=-1), 6) == take(train(seed=-1), 6)  # any int seed works


def test_each_epoch_is_a_new_permutation_of_all_records():
  batches = take(train(seed=1), 3 * N // 4)  # three epochs of 12 records in batches of 4
  epochs = [sum(batches[e * 3:(e + 1) * 3], []) for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(N))
  assert epochs[0] != list(range(N))  # shuffled
  assert len({tuple(e) for e in epochs}) == 3  # reshuffled every epoch


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_slices_concatenate_to_the_single_process_batches(process_count):
  # Batch 8 does not divide 12 records, so global batches also straddle epoch boundaries here.
  single = take(train(seed=7, batch=8), 5)
  parts = [take(train(seed=7, batch=8, process_index=p, process_count=process_count), 5)
           for p in range(process_count)]
  for step in range(5):
    assert sum((part[step] for part in parts), []) == single[step]


def test_set_state_resumes_exactly_after_json_round_trip():
  it = train(seed=5, batch=5)
  take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 4)
  resumed = train(seed=5, batch=5)
  resumed.set_state(state)
  assert take(resumed, 4) == expected


def test_threads_and_worker_processes_do_not_change_the_stream():
  expected = take(train(seed=2), 6)
  assert take(train(seed=2, read_threads=3), 6) == expected
  workers = train(seed=2, worker_count=2)
  assert take(workers, 6) == expected
  workers.close()


def test_keys_select_fields():
  batch = next(train(keys=('image', 'label', 'extra')))
  assert batch['extra'].dtype == np.float32 and batch['extra'].tolist() == batch['label'].tolist()


@pytest.mark.parametrize('kwargs, match', [
    (dict(batch=6, process_count=4), 'not divisible by the 4 processes'),
    (dict(batch=0), 'positive integer'),
    (dict(process_index=2, process_count=2), 'process_index 2'),
    (dict(keys=('image', 'caption')), r"not \['caption'\]"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
  with pytest.raises(errors.ConfigError, match=match):
    train(**kwargs)


def test_eval_pads_the_last_batch_and_masks_the_padding():
  num, batch, processes = 10, 4, 2
  per_process = [list(eval_batches(numbered_source(num), global_batch_size=batch,
                                   process_index=p, process_count=processes))
                 for p in range(processes)]
  seen = []
  for step in range(3):  # ceil(10 / 4)
    for p in range(processes):
      local = per_process[p][step]
      assert local['image'].shape == (2, 2, 2, 1) and local['label'].dtype == np.int32
      assert local['mask'].dtype == np.float32
      seen += [i for i, m in zip(ids(local), local['mask']) if m == 1]
  assert all(len(batches) == 3 for batches in per_process)
  assert seen == list(range(num))  # every record once, in order
  assert sum(float(b['mask'].sum()) for batches in per_process for b in batches) == num
  assert per_process[1][2]['mask'].tolist() == [0.0, 0.0]  # positions 10, 11 are padding


def test_eval_of_an_empty_split_yields_nothing():
  assert not list(eval_batches(InMemorySource({'image': np.zeros((0, 2, 2, 1), np.uint8)}),
                               global_batch_size=4, process_index=0, process_count=1))


def test_pipelines_read_tfds_sources(tmp_path):
  # A TFDS array_record source directly (not cached), as `get_source(cache_in_memory=False)` gives.
  with tfds.testing.mock_data(num_examples=6):
    source = tfds.data_source('mnist', split='train', data_dir=str(tmp_path), download=False)
    batch = next(train_iterator(source, global_batch_size=4, seed=0, process_index=0,
                                process_count=1))
    evals = list(eval_batches(source, global_batch_size=4, process_index=0, process_count=1))
  assert batch['image'].shape == (4, 28, 28, 1) and batch['image'].dtype == np.uint8
  assert batch['label'].dtype == np.int32
  assert [b['mask'].sum() for b in evals] == [4, 2]
