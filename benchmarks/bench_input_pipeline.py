"""Images/s of `kd_jax.data.train_iterator` on the real Fashion-MNIST, decoding per read vs cached in RAM.

    .venv/bin/python benchmarks/bench_input_pipeline.py [--data_dir DIR] [--batch 128] [--steps 200]

Without --data_dir it builds fashion_mnist offline into a temporary directory first (~20-60 s) and
deletes it afterwards. Compare the numbers with the images/s a KD step consumes.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kd_jax import data  # noqa: E402  (after the path so the script runs from a checkout)


def images_per_second(source, *, batch: int, steps: int, **kwargs) -> float:
  """Steady-state throughput: the first batches (start-up, worker spawn) are not timed."""
  it = data.train_iterator(source, global_batch_size=batch, seed=0, process_index=0,
                           process_count=1, **kwargs)
  for _ in range(5):
    next(it)
  started = time.perf_counter()
  for _ in range(steps):
    next(it)
  rate = batch * steps / (time.perf_counter() - started)
  if hasattr(it, 'close'):
    it.close()
  return rate


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=None, help='TFDS data dir (default: a temporary one)')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--workers', type=int, default=2, help='grain worker processes to also try')
  args = parser.parse_args()
  data_dir = args.data_dir or tempfile.mkdtemp(prefix='kd_jax_bench_')
  try:
    started = time.perf_counter()
    info = data.dataset_info('fashion_mnist', data_dir)
    print(f'prepare (build if missing): {time.perf_counter() - started:.1f} s  {info}')

    decoding = data.get_source('fashion_mnist', 'train', data_dir=data_dir, cache_in_memory=False)
    started = time.perf_counter()
    cached = data.get_source('fashion_mnist', 'train', data_dir=data_dir, cache_in_memory=True)
    print(f'cache_in_memory decode of {len(cached)} images: {time.perf_counter() - started:.1f} s')

    runs = [
        ('decode per read, 0 threads', decoding, {}),
        ('decode per read, 2 threads', decoding, {'read_threads': 2}),
        (f'decode per read, {args.workers} workers', decoding, {'worker_count': args.workers}),
        ('cache_in_memory, 0 threads', cached, {}),
    ]
    for label, source, kwargs in runs:
      if 'workers' in label and args.workers <= 0:
        continue
      rate = images_per_second(source, batch=args.batch, steps=args.steps, **kwargs)
      print(f'{label:32s} {rate:10,.0f} images/s')
  finally:
    if args.data_dir is None:
      shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == '__main__':
  main()
