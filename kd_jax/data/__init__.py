"""Input data: TFDS sources (with an offline Fashion-MNIST builder) and grain pipelines.

    source = get_source('fashion_mnist', 'train', data_dir=None)  # None: TFDS's default dir
    batches = train_iterator(source, global_batch_size=128, seed=0,
                             process_index=jax.process_index(), process_count=jax.process_count())

Batches are dicts of uint8 images / int32 labels in numpy; `augment` holds the on-device preprocessing.
"""
from kd_jax.data import augment
from kd_jax.data.pipeline import eval_batches, train_iterator
from kd_jax.data.sources import DatasetInfo, InMemorySource, dataset_info, get_source

__all__ = [
    'DatasetInfo', 'InMemorySource', 'augment', 'dataset_info', 'eval_batches', 'get_source',
    'train_iterator',
]
