"""Images/s of a DCGAN generator step: nearest-upsample + 3×3 conv vs 4×4 stride-2 ConvTranspose.

    .venv/bin/python benchmarks/bench_upsample_vs_convtranspose.py [--batch 64] [--width 64]
        [--resolution 32] [--channels 3] [--iters 20]

Why it exists: `dcgan_generator` upsamples with nearest + conv because on CPU XLA's ConvTranspose
made a DCGAN step much slower. This measures that choice on the machine at hand: one jitted forward
+ backward pass (gradients of a simple loss w.r.t. the parameters, BatchNorm in train mode),
compiled and warmed up first, then the median over `--iters` timed steps.
"""
import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

# Runnable as a script from a checkout: kd_jax is not installed as a package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kd_jax import models  # noqa: E402  pylint: disable=wrong-import-position


def step_fn(module):
  """A generator step's compute: forward in train mode, backward to every parameter."""
  def loss(params, batch_stats, z):
    images, state = module.apply({'params': params, 'batch_stats': batch_stats}, z, train=True,
                                 mutable=['batch_stats'])
    return jnp.mean(jnp.square(images)), state['batch_stats']

  @jax.jit
  def step(params, batch_stats, z):
    (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(params, batch_stats, z)
    return value, grads, new_stats
  return step


def images_per_second(upsample: str, *, batch: int, width: int, resolution: int, channels: int,
                      iters: int, warmup: int = 2) -> tuple[float, float]:
  """(median images/s, compile seconds) of one generator training step."""
  module = models.get('dcgan_generator', width=width, resolution=resolution, channels=channels,
                      upsample=upsample)
  z = jax.random.normal(jax.random.key(0), (batch, module.latent_dim))
  variables = jax.jit(module.init, static_argnames='train')(jax.random.key(1), z, train=False)
  step = step_fn(module)
  args = (variables['params'], variables['batch_stats'], z)
  started = time.perf_counter()
  jax.block_until_ready(step(*args))  # compilation
  compile_s = time.perf_counter() - started
  for _ in range(warmup):
    jax.block_until_ready(step(*args))
  times = []
  for _ in range(iters):
    started = time.perf_counter()
    jax.block_until_ready(step(*args))
    times.append(time.perf_counter() - started)
  return batch / statistics.median(times), compile_s


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--channels', type=int, default=3)
  parser.add_argument('--iters', type=int, default=20)
  args = parser.parse_args()
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}; dcgan_generator width={args.width} '
        f'{args.resolution}px×{args.channels} batch={args.batch}, median of {args.iters} steps')
  rates = {}
  for upsample in ('nearest', 'conv_transpose'):
    rate, compile_s = images_per_second(upsample, batch=args.batch, width=args.width,
                                        resolution=args.resolution, channels=args.channels,
                                        iters=args.iters)
    rates[upsample] = rate
    print(f'{upsample:16s} {rate:10,.0f} images/s   (compile {compile_s:.1f} s)')
  print(f"nearest+conv / conv_transpose: {rates['nearest'] / rates['conv_transpose']:.2f}×")


if __name__ == '__main__':
  main()
