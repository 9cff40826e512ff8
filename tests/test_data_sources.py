"""kd_jax.data sources: the offline Fashion-MNIST build, preparing on first use, and user errors."""
import gzip
import os
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kd_jax import data, errors
from kd_jax.data import fashion_mnist, sources

NUM_TRAIN, NUM_TEST = 12, 5


def write_idx(path, array: np.ndarray) -> None:
  """Writes `array` (uint8) as a gzipped IDX file, the format of the Fashion-MNIST release."""
  header = bytes((0, 0, 0x08, array.ndim)) + np.asarray(array.shape, '>u4').tobytes()
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_fake_idx_dir(directory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """A tiny stand-in for the Debian files: distinct random images, labels covering all classes."""
  rng = np.random.default_rng(0)
  splits = {}
  for split, prefix, num in (('train', 'train', NUM_TRAIN), ('test', 't10k', NUM_TEST)):
    images = rng.integers(0, 256, (num, 28, 28), dtype=np.uint8)
    labels = (np.arange(num) * 3 % 10).astype(np.uint8)
    write_idx(os.path.join(directory, f'{prefix}-images-idx3-ubyte.gz'), images)
    write_idx(os.path.join(directory, f'{prefix}-labels-idx1-ubyte.gz'), labels)
    splits[split] = (images, labels)
  return splits


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """fashion_mnist built once from fake IDX files by `get_source`'s first use."""
  idx_dir = tmp_path_factory.mktemp('idx')
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  raw = write_fake_idx_dir(idx_dir)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(fashion_mnist.IDX_DIR_ENV, str(idx_dir))
    source = sources.get_source('fashion_mnist', 'train', data_dir=data_dir, cache_in_memory=False)
  return {'data_dir': data_dir, 'idx_dir': str(idx_dir), 'raw': raw, 'train': source}


def _pairs(images, labels):
  return sorted((np.asarray(im).reshape(28, 28).tobytes(), int(lb))
                for im, lb in zip(images, labels))


def test_offline_build_is_read_by_tfds_data_source(built):
  for split in ('train', 'test'):
    source = tfds.data_source('fashion_mnist', split=split, data_dir=built['data_dir'],
                              download=False)
    records = [source[i] for i in range(len(source))]
    assert records[0]['image'].dtype == np.uint8 and records[0]['image'].shape == (28, 28, 1)
    assert _pairs([r['image'] for r in records], [r['label'] for r in records]) == _pairs(
        *built['raw'][split])


def test_offline_build_has_installed_tfds_version_features_and_format(built, tmp_path):
  registered = tfds.builder('fashion_mnist', data_dir=built['data_dir'])
  assert registered.is_prepared()
  assert str(registered.info.version) == str(tfds.builder_cls('fashion_mnist').VERSION)
  assert registered.info.file_format.value == 'array_record'
  assert {s: registered.info.splits[s].num_examples for s in ('train', 'test')} == {
      'train': NUM_TRAIN, 'test': NUM_TEST}
  # Same features spec, byte for byte, as TFDS's own builder would write.
  tfds.builder_cls('fashion_mnist')(data_dir=str(tmp_path)).info.features.save_config(str(tmp_path))
  tfds.builder_cls('fashion_mnist')(data_dir=str(tmp_path)).info.features.save_metadata(
      str(tmp_path))
  for name in ('features.json', 'label.labels.txt'):
    ours = (registered.data_path / name).read_bytes()
    assert ours == (tmp_path / name).read_bytes(), name
  # Nothing half-written or temporary is left next to the dataset.
  leftovers = [p for p in os.listdir(built['data_dir']) if not p.startswith('.fashion_mnist')]
  assert leftovers == ['fashion_mnist']
  assert os.listdir(os.path.join(built['data_dir'], 'fashion_mnist')) == [str(registered.version)]


def test_dataset_info(built):
  info = sources.dataset_info('fashion_mnist', built['data_dir'])
  assert info == ((28, 28, 1), 10, NUM_TRAIN, NUM_TEST)
  assert info.num_classes == 10


def test_cache_in_memory_holds_the_same_records(built):
  cached = sources.get_source('fashion_mnist', 'train', data_dir=built['data_dir'],
                              cache_in_memory=True)
  assert isinstance(cached, sources.InMemorySource)
  assert not isinstance(built['train'], sources.InMemorySource)
  assert len(cached) == len(built['train']) == NUM_TRAIN
  for i in (0, 5, NUM_TRAIN - 1):
    np.testing.assert_array_equal(cached[i]['image'], built['train'][i]['image'])
    assert cached[i]['label'] == built['train'][i]['label']
  # Small datasets are cached by default.
  default = sources.get_source('fashion_mnist', 'test', data_dir=built['data_dir'])
  assert isinstance(default, sources.InMemorySource) and len(default) == NUM_TEST


def test_prepared_dataset_is_not_built_again(built, monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('rebuilt a prepared dataset')
  monkeypatch.setattr(fashion_mnist, 'build', fail)
  assert len(sources.get_source('fashion_mnist', 'test', data_dir=built['data_dir'])) == NUM_TEST


def test_concurrent_first_uses_build_once(built, tmp_path, monkeypatch):
  monkeypatch.setenv(fashion_mnist.IDX_DIR_ENV, built['idx_dir'])
  calls = []
  real_build = fashion_mnist.build

  def counting_build(*args, **kwargs):
    calls.append(1)
    real_build(*args, **kwargs)
  monkeypatch.setattr(fashion_mnist, 'build', counting_build)
  lengths, failures = [], []

  def use():
    try:
      lengths.append(len(sources.get_source('fashion_mnist', 'test', data_dir=str(tmp_path))))
    except Exception as e:  # pylint: disable=broad-except
      failures.append(e)
  threads = [threading.Thread(target=use) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not failures
  assert lengths == [NUM_TEST, NUM_TEST]
  assert len(calls) == 1


def test_corrupt_idx_file_fails_clearly_and_leaves_nothing_prepared(tmp_path, monkeypatch):
  idx_dir = tmp_path / 'idx'
  idx_dir.mkdir()
  write_fake_idx_dir(idx_dir)
  images = np.zeros((NUM_TRAIN - 1, 28, 28), np.uint8)  # one image fewer than labels
  write_idx(idx_dir / 'train-images-idx3-ubyte.gz', images)
  monkeypatch.setenv(fashion_mnist.IDX_DIR_ENV, str(idx_dir))
  data_dir = tmp_path / 'tfds'
  with pytest.raises(errors.DatasetUnavailableError, match='Reinstall the Fashion-MNIST files'):
    sources.get_source('fashion_mnist', 'train', data_dir=str(data_dir))
  assert not tfds.builder('fashion_mnist', data_dir=str(data_dir)).is_prepared()
  # The files are checked before TFDS starts: no dataset dir, or only TFDS's emptied temporary one.
  assert not (data_dir / 'fashion_mnist').exists() or not list((data_dir / 'fashion_mnist').iterdir())


def test_truncated_gzip_is_named_before_tfds_starts(tmp_path, monkeypatch):
  idx_dir = tmp_path / 'idx'
  idx_dir.mkdir()
  write_fake_idx_dir(idx_dir)
  victim = idx_dir / 'train-images-idx3-ubyte.gz'
  victim.write_bytes(victim.read_bytes()[:-20])
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      lambda *a, **k: pytest.fail('TFDS started on a damaged file'))
  with pytest.raises(errors.DatasetUnavailableError,
                     match=r'train-images-idx3-ubyte.gz is truncated or corrupt \(EOFError'):
    fashion_mnist.build(str(tmp_path / 'tfds'), str(idx_dir))


@pytest.fixture
def no_downloads(monkeypatch):
  def offline(self, *args, **kwargs):
    raise ConnectionError(f'no network to download {self.name}')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', offline)


def test_fashion_mnist_without_idx_files_or_network(tmp_path, monkeypatch, no_downloads):
  # No IDX files where Debian puts them (and no variable): kd_jax tries the TFDS download.
  monkeypatch.delenv(fashion_mnist.IDX_DIR_ENV, raising=False)
  monkeypatch.setattr(fashion_mnist, 'DEFAULT_IDX_DIR', str(tmp_path / 'nowhere'))
  monkeypatch.setattr(sources, '_network_reachable', lambda *a, **k: True)
  with pytest.raises(errors.DatasetUnavailableError) as e:
    sources.get_source('fashion_mnist', 'train', data_dir=str(tmp_path))
  assert 'apt-get install dataset-fashion-mnist (or set KD_JAX_FASHION_MNIST_IDX_DIR)' in str(e.value)
  assert 'ConnectionError' in str(e.value)


def test_no_network_fails_at_once_instead_of_retrying(tmp_path, monkeypatch, no_downloads):
  monkeypatch.setattr(sources, '_network_reachable', lambda *a, **k: False)
  with pytest.raises(errors.DatasetUnavailableError, match="dataset 'mnist' is not prepared in .* "
                     'cannot reach the internet'):
    sources.get_source('mnist', 'train', data_dir=str(tmp_path))


def test_explicit_idx_dir_without_files_is_an_error_not_a_download(tmp_path, monkeypatch,
                                                                   no_downloads):
  monkeypatch.setenv(fashion_mnist.IDX_DIR_ENV, str(tmp_path / 'nowhere'))
  with pytest.raises(errors.DatasetUnavailableError, match=r'IDX files .*not found in .*nowhere'):
    sources.get_source('fashion_mnist', 'train', data_dir=str(tmp_path))


def test_mnist_without_network(tmp_path, no_downloads):
  with pytest.raises(errors.DatasetUnavailableError) as e:
    sources.dataset_info('mnist', str(tmp_path))
  assert "dataset 'mnist' is not prepared" in str(e.value)
  assert 'pass it as data_dir' in str(e.value) and 'config' not in str(e.value)


def test_unknown_dataset_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"unknown dataset 'no_such_set'; use a TFDS"):
    sources.get_source('no_such_set', 'train', data_dir=str(tmp_path))


def test_unknown_split_is_a_config_error(built):
  with pytest.raises(errors.ConfigError, match="unknown split 'validation'"):
    sources.get_source('fashion_mnist', 'validation', data_dir=built['data_dir'])


def test_waiting_for_another_process_times_out_clearly():
  with pytest.raises(errors.DatasetUnavailableError, match='process 0'):
    sources._wait_for(  # pylint: disable=protected-access
        lambda: False, 'mnist', 'gs://bucket/tfds', timeout_s=0.0, poll_s=0.0)


def test_mock_data_source_through_get_source(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    source = sources.get_source('cifar10', 'train', data_dir=str(tmp_path))
  assert isinstance(source, sources.InMemorySource) and len(source) == 6
  assert source.arrays['image'].shape == (6, 32, 32, 3)
  assert source.arrays['image'].dtype == np.uint8


def test_cached_and_decoding_sources_give_the_same_train_stream(built):
  cached = sources.get_source('fashion_mnist', 'train', data_dir=built['data_dir'],
                              cache_in_memory=True)
  streams = [data.train_iterator(s, global_batch_size=8, seed=1, process_index=0, process_count=1)
             for s in (cached, built['train'])]
  for _ in range(3):
    a, b = (next(it) for it in streams)
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_first_build_prints_only_kd_jax_lines(tmp_path, capfd):
  # TFDS's bold "Downloading and preparing dataset Unknown size" lines would claim a download.
  idx_dir = tmp_path / 'idx'
  idx_dir.mkdir()
  write_fake_idx_dir(idx_dir)
  fashion_mnist.build(str(tmp_path / 'tfds'), str(idx_dir))
  out = [l for l in capfd.readouterr().out.splitlines() if l.strip()]
  assert out and all(l.startswith('[kd_jax]') for l in out), out
  assert any('is ready in' in l for l in out)
