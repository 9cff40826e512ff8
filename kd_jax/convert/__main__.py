"""Command line: a torchvision or StyleGAN2-ADA state dict in as a kd_jax teacher, or a kd_jax
student out in the same PyTorch layout.

    python -m kd_jax.convert --from torchvision --in teacher.pth --out workdirs/imported \
        [--check-npz in_out.npz]
    python -m kd_jax.convert --from stylegan2_ada --in G.pth --out workdirs/imported_g \
        [--check-npz z_img.npz]
    python -m kd_jax.convert --to torchvision --in workdirs/student --out student.safetensors
    python -m kd_jax.convert --to stylegan2_ada --in workdirs/sg2_student --out G.safetensors

A StyleGAN2-ADA G state dict is written as role 'generator' (what a generator-distillation run's
`config.teacher.checkpoint` restores), a D state dict as role 'discriminator'.

Importing writes a workdir that `config.teacher.checkpoint` can point at (its export holds the
model as role 'model', its meta the inferred model config). `--check-npz` holds NCHW inputs and the
logits the PyTorch model gave for them, as `x`/`logits` or `x_<S>`/`logits_<S>` pairs; the
converted model must reproduce every pair within 1e-4 of the logits' max, or nothing is written.
For StyleGAN2-ADA it holds `z` (and `c`) with the NCHW `img` G made (ψ=1, noise_mode='const'), or
for a D the NCHW `img` (and `c`) with its `logits`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import checkpoint as ckpt_lib
from kd_jax import errors
from kd_jax.convert import formats
from kd_jax.convert import stylegan2_ada as sg2
from kd_jax.convert import torchvision as tv
from kd_jax.models import registry

SOURCES = ('torchvision', 'torchvision:resnet', 'torchvision:mobilenet_v2', 'stylegan2_ada')
TARGETS = ('torchvision', 'stylegan2_ada')
TOLERANCE = 1e-4  # of max |logits|: float32 ports land near 1e-5, convention bugs at 1e-2 or more


def _build(config: Mapping[str, Any]):
  return registry.get(config['name'], **{k: v for k, v in config.items() if k != 'name'})


def _pairs(npz: Mapping[str, np.ndarray], path: str) -> list[tuple[str, str]]:
  pairs = [(k, 'logits' + k[1:]) for k in sorted(npz) if k == 'x' or k.startswith('x_')]
  pairs = [(x, y) for x, y in pairs if y in npz]
  if not pairs:
    raise errors.ConfigError(f'--check-npz={path}: no input/output pair; store NCHW inputs as '
                             "'x' with their logits as 'logits' (or 'x_<S>' and 'logits_<S>').")
  return pairs


def check_outputs(config: Mapping[str, Any], variables: Mapping[str, Any], npz_path: str
                  ) -> dict[str, float]:
  """Max error / max |logits| per pair of `npz_path`; CheckpointError above TOLERANCE."""
  with np.load(npz_path) as f:
    npz = dict(f)
  model = _build(config)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  flax_vars = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
  errs = {}
  for x_key, y_key in _pairs(npz, npz_path):
    got = apply(flax_vars, jnp.asarray(np.asarray(npz[x_key], np.float32).transpose(0, 2, 3, 1)))
    errs[y_key] = _relative_error(
        got, npz[y_key], y_key, npz_path, f'the converted {config["name"]}',
        'Is the input NCHW as PyTorch takes it, and the state dict the one that produced these '
        'logits?')
  return errs


def _relative_error(got: Any, want: Any, y_key: str, npz_path: str, what: str, hint: str
                    ) -> float:
  """max |got − want| / max |want|; CheckpointError on another shape or above TOLERANCE."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if got.shape != want.shape:
    raise errors.CheckpointError(f'--check-npz={npz_path}: the model gives {y_key} of shape '
                                 f'{got.shape}, the file holds {want.shape}.')
  err = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
  if err > TOLERANCE:
    raise errors.CheckpointError(
        f'--check-npz={npz_path}: {what} misses {y_key} by {err:.2e} of its max (tolerance '
        f'{TOLERANCE:g}); nothing was written. {hint}')
  return err


def check_stylegan2_outputs(config: Mapping[str, Any], variables: Mapping[str, Any],
                            npz_path: str, role: str) -> dict[str, float]:
  """A StyleGAN2-ADA import against PyTorch's outputs: G maps `z` (and `c`) to `img` (NCHW, ψ=1,
  noise_mode='const'); D maps `img` (and `c`) to `logits`. Max error / max |output|."""
  with np.load(npz_path) as f:
    npz = dict(f)
  x_key, y_key = ('z', 'img') if role == 'generator' else ('img', 'logits')
  if x_key not in npz or y_key not in npz:
    raise errors.ConfigError(
        f'--check-npz={npz_path}: a StyleGAN2-ADA {role} check needs {x_key!r} and {y_key!r} '
        f"(and 'c' if conditional); the file holds {sorted(npz)[:8]}.")
  model = _build(config)
  x = np.asarray(npz[x_key], np.float32)
  c = jnp.asarray(npz['c'], jnp.float32) if 'c' in npz and npz['c'].size else None
  if role == 'generator':
    got = model.apply(dict(variables), jnp.asarray(x), c, noise_mode='const')
  else:
    got = model.apply(dict(variables), jnp.asarray(x.transpose(0, 2, 3, 1)), c)
  if role == 'generator':
    got = jnp.transpose(got, (0, 3, 1, 2))
  return {y_key: _relative_error(
      got, npz[y_key], y_key, npz_path, f'the converted StyleGAN2-ADA {role}',
      "Were the images made with truncation_psi=1 and noise_mode='const' from this state dict?")}


def import_teacher(source: str, in_path: str, out: str, check_npz: str | None = None
                   ) -> dict[str, Any]:
  """Converts `in_path` and writes it as a kd_jax teacher export in workdir `out`.

  Returns:
    {'model': model config, 'check': {logits key: relative error}}.

  Raises:
    ConfigError / CheckpointError: bad arguments, an unreadable or mismatched state dict, a failed
      check, or an `out` that already holds a checkpoint; nothing is written then.
  """
  if source not in SOURCES:
    raise errors.ConfigError(f'--from={source!r} is not supported; use one of {SOURCES}.')
  state = formats.load_state_dict(in_path)
  if source == 'stylegan2_ada':
    # G has a mapping and a synthesis network; anything else is tried as D (which names the
    # first offending keys if it is neither).
    is_g = any(k.startswith('synthesis.') for k in state)
    config, variables = (sg2.generator_from_state_dict(state) if is_g
                         else sg2.discriminator_from_state_dict(state))
    role = 'generator' if is_g else 'discriminator'
    errs = check_stylegan2_outputs(config, variables, check_npz, role) if check_npz else {}
  else:
    arch = source.split(':', 1)[1] if ':' in source else None
    config, variables = tv.to_flax(state, arch)
    role = 'model'
    errs = check_outputs(config, variables, check_npz) if check_npz else {}
  with open(in_path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  export = {role: {k: v for k, v in variables.items() if k in ('params', 'batch_stats',
                                                                 'buffers')}}
  meta = {'trainer': 'convert', 'source': source, 'input': os.path.abspath(in_path),
          'input_sha256': digest, 'check': errs, 'exported': {role: config}}
  ckpt_lib.write_export_only(out, export, meta)
  return {'model': config, 'check': errs}


def export_student(workdir: str, out: str, role: str | None = None,
                   target: str = 'torchvision') -> dict[str, Any]:
  """Writes the `role` model exported by the kd_jax run at `workdir` as a .safetensors state dict
  of `target`'s layout (torchvision classifiers; StyleGAN2-ADA G or D, role 'model' of a distilled
  student or a GAN run: role 'generator' by default)."""
  _, _, meta = ckpt_lib.read_meta(workdir, '--in')
  if target == 'stylegan2_ada':
    if role is None:
      role = next((r for r in ('generator', 'model') if r in meta['exported']), 'generator')
    config = meta['exported'].get(role)
    if config is None:
      raise errors.CheckpointError(f'--in={workdir!r} exports {sorted(meta["exported"])}, not a '
                                   f'{role!r}.')
    if config.get('name') not in sg2.MODELS:
      raise errors.CheckpointError(f"--in={workdir!r} holds a {config.get('name')!r}; only "
                                   f'{sorted(sg2.MODELS)} have the StyleGAN2-ADA layout.')
    if not out.endswith(formats.SAFETENSORS_SUFFIX):
      raise errors.ConfigError(f'--out={out!r}: exports are written as '
                               f'{formats.SAFETENSORS_SUFFIX}.')
    variables = ckpt_lib.load_export_numpy(workdir)[role]
    formats.save_safetensors(sg2.to_state_dict(config, variables), out)
    return {'model': config}
  role = role or 'model'
  config = meta['exported'].get(role)
  if config is None:
    raise errors.CheckpointError(f'--in={workdir!r} exports {sorted(meta["exported"])}, not a '
                                 f'{role!r}.')
  if config.get('name') not in tv.MODEL_NAMES.values():
    raise errors.CheckpointError(
        f"--in={workdir!r} holds a {config.get('name')!r}; only "
        f'{sorted(tv.MODEL_NAMES.values())} have a torchvision layout to export to.')
  if not out.endswith(formats.SAFETENSORS_SUFFIX):
    raise errors.ConfigError(f'--out={out!r}: exports are written as {formats.SAFETENSORS_SUFFIX}.')
  variables = ckpt_lib.load_export_numpy(workdir)[role]
  formats.save_safetensors(tv.to_torch(config, variables), out)
  return {'model': config}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kd_jax.convert', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  direction = parser.add_mutually_exclusive_group(required=True)
  direction.add_argument('--from', dest='source', help=f'import from: {", ".join(SOURCES)}')
  direction.add_argument('--to', dest='target', choices=TARGETS,
                         help='export a kd_jax run to a torchvision or StyleGAN2-ADA state dict')
  parser.add_argument('--in', dest='in_path', required=True,
                      help='state dict (.safetensors/.pth) to import, or the run to export')
  parser.add_argument('--out', required=True, help='workdir to write, or the .safetensors file')
  parser.add_argument('--check-npz', help='inputs and expected logits to verify the import')
  args = parser.parse_args(argv)
  try:
    if args.source:
      result = import_teacher(args.source, args.in_path, args.out, args.check_npz)
      print(f'wrote a kd_jax teacher {result["model"]} to {args.out}'
            + ''.join(f'; {k} max error {e:.1e} of max' for k, e in result['check'].items()))
    else:
      result = export_student(args.in_path, args.out, target=args.target)
      print(f'wrote the {result["model"]["name"]} of {args.in_path} to {args.out}')
  except errors.KDError as e:
    print(f'error: {e}', file=sys.stderr)
    return e.exit_code
  return 0


if __name__ == '__main__':
  sys.exit(main())
