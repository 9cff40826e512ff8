"""Per-convolution profile for issue 13: each conv of the four `bench_vs_pytorch` workloads, timed
alone as forward, forward with the input gradient (dgrad), with the weight gradient (wgrad) and with both, in XLA:CPU and in PyTorch.

A train step's time is mostly these three ops per conv layer, so this table shows which ones XLA:CPU
emits slowly and whether an XLA flag (e.g. its YNNPACK/XNNPACK/oneDNN library fusions, passed in
XLA_FLAGS) fixes them. kd_jax's layout is Flax's NHWC/HWIO; PyTorch's is NCHW/OIHW.

  .venv/bin/python benchmarks/bench_conv_ops.py [--torch_python /path/to/torch-venv/bin/python]
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=... .venv/bin/python benchmarks/bench_conv_ops.py

This file is run by both Pythons: the torch side (`--side torch`) never imports jax, and kd_jax
never imports torch.
"""
import argparse
import json
import os
import subprocess
import sys
import time

# (name, batch, height/width in, c_in, c_out, kernel, stride); SAME padding as the networks.
CONVS = [
    ('resnet stem / cnn stage1 1→16 @28', 128, 28, 1, 16, 3, 1),
    ('resnet stage1 16→16 @28 (×6)', 128, 28, 16, 16, 3, 1),
    ('resnet 16→32 s2 @28 / cnn stage2', 128, 28, 16, 32, 3, 2),
    ('resnet stage2 32→32 @14 (×5)', 128, 14, 32, 32, 3, 1),
    ('resnet 32→64 s2 @14 / cnn stage3', 128, 14, 32, 64, 3, 2),
    ('resnet stage3 64→64 @7 (×5)', 128, 7, 64, 64, 3, 1),
    ('dcgan G 128→64 @14', 64, 14, 128, 64, 3, 1),
    ('dcgan G 64→32 @28', 64, 28, 64, 32, 3, 1),
    ('dcgan G to_rgb 32→1 @28', 64, 28, 32, 1, 3, 1),
    ('dcgan D 1→32 4×4 s2 @28', 64, 28, 1, 32, 4, 2),
    ('dcgan D 32→64 4×4 s2 @14', 64, 14, 32, 64, 4, 2),
]


def _time(fn, reps):
  for _ in range(5):  # compilation (XLA) and primitive caches (oneDNN)
    fn()
  t0 = time.perf_counter()
  for _ in range(reps):
    fn()
  return (time.perf_counter() - t0) / reps * 1e3  # ms


def jax_side(reps):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  out = {}
  for name, b, hw, ci, co, k, s in CONVS:
    x = jax.random.normal(jax.random.key(0), (b, hw, hw, ci))
    w = jax.random.normal(jax.random.key(1), (k, k, ci, co)) * 0.1
    conv = lambda x, w, s=s: jax.lax.conv_general_dilated(
        x, w, (s, s), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    g = jnp.ones(jax.eval_shape(conv, x, w).shape)
    fwd = jax.jit(conv)
    # Each gradient jitted with its forward, as in a train step (and as PyTorch must run it).
    dgrad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    wgrad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    both = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    out[name] = {
        'fwd': _time(lambda: fwd(x, w).block_until_ready(), reps),
        'fwd+dgrad': _time(lambda: dgrad(x, w, g).block_until_ready(), reps),
        'fwd+wgrad': _time(lambda: wgrad(x, w, g).block_until_ready(), reps),
        'fwd+both': _time(lambda: jax.block_until_ready(both(x, w, g)), reps)}
  return out


def torch_side(reps, threads):
  import torch  # pylint: disable=import-outside-toplevel,import-error
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel,import-error
  torch.set_num_threads(threads)
  out = {}
  for name, b, hw, ci, co, k, s in CONVS:
    x = torch.randn(b, ci, hw, hw, requires_grad=True)
    w = (torch.randn(co, ci, k, k) * 0.1).requires_grad_(True)
    # SAME padding as XLA's: total max((out-1)·s + k - in, 0), the extra pixel at the end.
    out_hw = -(-hw // s)
    pad = max((out_hw - 1) * s + k - hw, 0)
    conv = lambda x, w, s=s, pad=pad: F.conv2d(F.pad(x, (pad // 2, pad - pad // 2) * 2), w, stride=s)
    g = torch.ones(b, co, out_hw, out_hw)

    def fwd():
      with torch.no_grad():
        conv(x, w)
    out[name] = {
        'fwd': _time(fwd, reps),
        'fwd+dgrad': _time(lambda: torch.autograd.grad(conv(x, w.detach()), x, g), reps),
        'fwd+wgrad': _time(lambda: torch.autograd.grad(conv(x.detach(), w), w, g), reps),
        'fwd+both': _time(lambda: torch.autograd.grad(conv(x, w), (x, w), g), reps)}
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--torch_python', default=os.environ.get('KD_JAX_TORCH_PYTHON', ''))
  p.add_argument('--reps', type=int, default=20)
  p.add_argument('--threads', type=int, default=2)
  p.add_argument('--side', default='', help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.side == 'torch':
    print(json.dumps(torch_side(args.reps, args.threads)))
    return
  ours = jax_side(args.reps)
  theirs = {}
  if args.torch_python:
    out = subprocess.run([args.torch_python, os.path.abspath(__file__), '--side', 'torch',
                          '--reps', str(args.reps), '--threads', str(args.threads)],
                         capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; ms per op (PyTorch in brackets)")
  ops = ('fwd', 'fwd+dgrad', 'fwd+wgrad', 'fwd+both')
  print('| conv | ' + ' | '.join(ops) + ' |')
  print('|---|---|---|---|---|')
  for name, *_ in CONVS:
    cells = [f'{ours[name][op]:.2f}' + (f' ({theirs[name][op]:.2f})' if theirs else '')
             for op in ops]
    print(f"| {name} | {' | '.join(cells)} |")
  total = lambda side: sum(side[name]['fwd+both'] for name, *_ in CONVS)
  print(f'sum of fwd+both: XLA {total(ours):.1f} ms' +
        (f', PyTorch {total(theirs):.1f} ms' if theirs else ''))


if __name__ == '__main__':
  main()
