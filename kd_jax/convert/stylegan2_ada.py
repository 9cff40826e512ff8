"""Official StyleGAN2-ADA state dicts (NVlabs/stylegan2-ada-pytorch `G.state_dict()`,
`D.state_dict()`) ↔ kd_jax `stylegan2_ada` variables, with the architecture read from the keys.

`generator_from_state_dict` / `discriminator_from_state_dict` infer resolution (the `b{R}` block
names), channels per resolution (→ channel_base/channel_max), mapping depth (`mapping.fc{i}`),
z/c/w dims, image channels, architecture ('orig'/'skip'/'resnet') and the noise inputs from the
keys and shapes; what a state dict cannot tell (conv_clamp, mbstd_group_size, lr multipliers, …)
comes from keyword overrides with the official defaults. The Flax modules keep torch's names and
layouts, so a tensor moves by key alone (`synthesis.b8.conv0.weight` ↔
params/synthesis/b8/conv0/weight) and `to_state_dict` is the exact, bitwise inverse.

Get a state dict from an official `.pkl` snapshot with NVIDIA's own code (it needs their repo on
the path): `torch.save(legacy.load_network_pkl(f)['G_ema'].state_dict(), 'G.pth')`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterator, Mapping

import numpy as np

from kd_jax import errors
from kd_jax.models import stylegan2_ada as sg
from kd_jax.types import PyTree

GENERATOR = 'stylegan2_ada_generator'
DISCRIMINATOR = 'stylegan2_ada_discriminator'
MODELS = {GENERATOR: sg.Generator, DISCRIMINATOR: sg.Discriminator}
_BUFFER_NAMES = ('resample_filter', 'noise_const', 'w_avg')
# Shown in error messages, so a wrong state dict is named for what it is not.
_WHAT = {GENERATOR: 'a StyleGAN2-ADA generator', DISCRIMINATOR: 'a StyleGAN2-ADA discriminator'}

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# The torch tensors of a config, in the official state_dict() order (own parameters, own
# buffers, then submodules in the order the constructor registers them).


def _fc(prefix: str, out: int, inp: int, bias: bool = True) -> Iterator[tuple[str, Shape]]:
  yield f'{prefix}.weight', (out, inp)
  if bias:
    yield f'{prefix}.bias', (out,)


def _conv(prefix: str, out: int, inp: int, k: int, f: Shape,
          bias: bool = True) -> Iterator[tuple[str, Shape]]:
  yield f'{prefix}.weight', (out, inp, k, k)
  if bias:
    yield f'{prefix}.bias', (out,)
  yield f'{prefix}.resample_filter', f


def _filter_shape(config: Mapping[str, Any]) -> Shape:
  return sg.setup_filter(config.get('resample_filter', (1, 3, 3, 1))).shape


def _mapping(prefix: str, z_dim: int, c_dim: int, w_dim: int, layers: int, embed: int | None,
             hidden: int | None, w_avg: bool) -> Iterator[tuple[str, Shape]]:
  embed = (w_dim if embed is None else embed) if c_dim else 0
  hidden = w_dim if hidden is None else hidden
  if w_avg:
    yield f'{prefix}.w_avg', (w_dim,)
  if c_dim:
    yield from _fc(f'{prefix}.embed', embed, c_dim)
  feats = [z_dim + embed] + [hidden] * (layers - 1) + [w_dim]
  for i in range(layers):
    yield from _fc(f'{prefix}.fc{i}', feats[i + 1], feats[i])


def _synthesis_layer(prefix: str, cin: int, cout: int, w_dim: int, res: int, f: Shape,
                     noise: bool) -> Iterator[tuple[str, Shape]]:
  yield f'{prefix}.weight', (cout, cin, 3, 3)
  if noise:
    yield f'{prefix}.noise_strength', ()
  yield f'{prefix}.bias', (cout,)
  yield f'{prefix}.resample_filter', f
  if noise:
    yield f'{prefix}.noise_const', (res, res)
  yield from _fc(f'{prefix}.affine', cin, w_dim)


def _generator_keys(c: Mapping[str, Any]) -> Iterator[tuple[str, Shape]]:
  f, arch, res_max = _filter_shape(c), c.get('architecture', 'skip'), c['img_resolution']
  resolutions = sg.block_resolutions(res_max)
  chans = sg.channels_dict(resolutions, c.get('channel_base', 32768), c.get('channel_max', 512))
  noise, w_dim, img_ch = c.get('use_noise', True), c['w_dim'], c.get('img_channels', 3)
  for res in resolutions:
    p, cin, cout = f'synthesis.b{res}', (chans[res // 2] if res > 4 else 0), chans[res]
    if cin == 0:
      yield f'{p}.const', (cout, res, res)
    yield f'{p}.resample_filter', f
    if cin:
      yield from _synthesis_layer(f'{p}.conv0', cin, cout, w_dim, res, f, noise)
    yield from _synthesis_layer(f'{p}.conv1', cout, cout, w_dim, res, f, noise)
    if res == res_max or arch == 'skip':
      yield f'{p}.torgb.weight', (img_ch, cout, 1, 1)
      yield f'{p}.torgb.bias', (img_ch,)
      yield from _fc(f'{p}.torgb.affine', cout, w_dim)
    if cin and arch == 'resnet':
      yield from _conv(f'{p}.skip', cout, cin, 1, f, bias=False)
  yield from _mapping('mapping', c['z_dim'], c['c_dim'], w_dim, c.get('mapping_layers', 8),
                      c.get('embed_features'), c.get('layer_features'),
                      c.get('w_avg_beta', 0.995) is not None)


def _discriminator_keys(c: Mapping[str, Any]) -> Iterator[tuple[str, Shape]]:
  f, arch, res_max = _filter_shape(c), c.get('architecture', 'resnet'), c['img_resolution']
  resolutions = sg.block_resolutions(res_max)[::-1][:-1]
  chans = sg.channels_dict(resolutions + [4], c.get('channel_base', 32768),
                           c.get('channel_max', 512))
  img_ch, c_dim = c.get('img_channels', 3), c['c_dim']
  cmap = (chans[4] if c.get('cmap_dim') is None else c['cmap_dim']) if c_dim else 0
  for res in resolutions:
    p, tmp, out = f'b{res}', chans[res], chans[res // 2]
    yield f'{p}.resample_filter', f
    if res == res_max or arch == 'skip':
      yield from _conv(f'{p}.fromrgb', tmp, img_ch, 1, f)
    yield from _conv(f'{p}.conv0', tmp, tmp, 3, f)
    yield from _conv(f'{p}.conv1', out, tmp, 3, f)
    if arch == 'resnet':
      yield from _conv(f'{p}.skip', out, tmp, 1, f, bias=False)
  if c_dim:
    yield from _mapping('mapping', 0, c_dim, cmap, c.get('mapping_layers', 8), None, None, False)
  c4 = chans[4]
  if arch == 'skip':
    yield from _conv('b4.fromrgb', c4, img_ch, 1, f)
  yield from _conv('b4.conv', c4, c4 + c.get('mbstd_num_channels', 1), 3, f)
  yield from _fc('b4.fc', c4, c4 * 16)
  yield from _fc('b4.out', cmap if c_dim else 1, c4)


def state_dict_shapes(config: Mapping[str, Any]) -> dict[str, Shape]:
  """Every key of the official state dict of `config` and its shape, in state_dict() order."""
  keys = _generator_keys if config['name'] == GENERATOR else _discriminator_keys
  return dict(keys(config))


def _flax_path(key: str) -> tuple[str, tuple[str, ...]]:
  parts = tuple(key.split('.'))
  return (sg.BUFFERS if parts[-1] in _BUFFER_NAMES else 'params'), parts


# ---------------------------------------------------------------------------------------------
# Inference.


def _fail(what: str, detail: str, expected: str) -> errors.CheckpointError:
  return errors.CheckpointError(f'state dict is not {_WHAT[what]}: {detail}; expected {expected}.')


def _shape(sd: Mapping[str, np.ndarray], key: str, what: str) -> Shape:
  if key not in sd:
    raise _fail(what, f'key {key!r} is missing', 'the keys of the official networks.py')
  return tuple(np.shape(sd[key]))


def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
  found = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
  return sorted(found)


def infer_channels(chans: Mapping[int, int], what: str) -> tuple[int, int]:
  """(channel_base, channel_max) with min(channel_base // res, channel_max) == chans[res]."""
  cmax = max(chans.values())
  lo, hi = 0, math.inf
  for res, ch in chans.items():
    if ch < cmax:  # base // res == ch  ⇔  ch·res ≤ base < (ch + 1)·res
      lo, hi = max(lo, ch * res), min(hi, (ch + 1) * res - 1)
  base = lo if lo else cmax * max(chans)
  if base > hi or any(min(base // r, cmax) != ch for r, ch in chans.items()):
    raise _fail(what, f'channels per resolution {dict(sorted(chans.items()))} follow no '
                'channel_base/channel_max', 'min(channel_base // res, channel_max) channels')
  return base, cmax


def _filter_taps(sd: Mapping[str, np.ndarray], key: str) -> list[float]:
  f = np.asarray(sd[key], np.float64)
  # Only the shape matters for the config: the values themselves are loaded as the buffer.
  return [float(v) for v in (f.sum(axis=0) if f.ndim == 2 else f)]


def _mapping_config(sd: Mapping[str, np.ndarray], what: str) -> dict[str, Any]:
  layers = _indices(sd, r'mapping\.fc(\d+)\.weight$')
  if not layers:
    raise _fail(what, 'no mapping.fc0.weight', 'mapping.fc0 … mapping.fc{N-1}')
  out = {'mapping_layers': layers[-1] + 1, 'c_dim': 0, 'embed': 0}
  if 'mapping.embed.weight' in sd:
    out['embed'], out['c_dim'] = _shape(sd, 'mapping.embed.weight', what)
  out['in'] = _shape(sd, 'mapping.fc0.weight', what)[1]
  out['hidden'] = _shape(sd, 'mapping.fc0.weight', what)[0]
  out['out'] = _shape(sd, f'mapping.fc{layers[-1]}.weight', what)[0]
  return out


def _apply_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
  cls = MODELS[config['name']]
  fields = [f.name for f in dataclasses.fields(cls) if f.name not in ('parent', 'name')]
  bad = [k for k in overrides if k not in fields]
  if bad:
    raise errors.ConfigError(f'{", ".join(bad)}: not a field of {cls.__name__}; its fields: '
                             f'{", ".join(fields)}.')
  config.update(overrides)
  return config


def infer_generator_config(sd: Mapping[str, np.ndarray], **overrides: Any) -> dict[str, Any]:
  """The `stylegan2_ada.Generator` config of an official G state dict (see the module doc)."""
  what = GENERATOR
  resolutions = _indices(sd, r'synthesis\.b(\d+)\.')
  if not resolutions:
    raise _fail(what, 'no synthesis.b{R}.* keys', 'synthesis.b4 … synthesis.b{R} and mapping.fc*')
  res_max = resolutions[-1]
  try:
    expected = sg.block_resolutions(res_max)
  except ValueError as e:
    raise _fail(what, f'top block synthesis.b{res_max}', 'a power-of-two resolution ≥ 4') from e
  if resolutions != expected:
    raise _fail(what, f'blocks {["b%d" % r for r in resolutions]}',
                f'blocks {["b%d" % r for r in expected]}')
  chans = {r: _shape(sd, f'synthesis.b{r}.conv1.weight', what)[0] for r in resolutions}
  base, cmax = infer_channels(chans, what)
  if any(f'synthesis.b{r}.skip.weight' in sd for r in resolutions):
    arch = 'resnet'
  elif res_max == 4 or any(f'synthesis.b{r}.torgb.weight' in sd for r in resolutions[:-1]):
    arch = 'skip'
  else:
    arch = 'orig'
  m = _mapping_config(sd, what)
  w_dim = _shape(sd, 'synthesis.b4.conv1.affine.weight', what)[1]
  config = {
      'name': what, 'z_dim': m['in'] - m['embed'], 'c_dim': m['c_dim'], 'w_dim': w_dim,
      'img_resolution': res_max,
      'img_channels': _shape(sd, f'synthesis.b{res_max}.torgb.weight', what)[0],
      'mapping_layers': m['mapping_layers'],
      'embed_features': (m['embed'] if m['embed'] != w_dim else None) if m['c_dim'] else None,
      'layer_features': (m['hidden'] if m['hidden'] != w_dim and m['mapping_layers'] > 1
                         else None),
      'w_avg_beta': 0.995 if 'mapping.w_avg' in sd else None,
      'channel_base': base, 'channel_max': cmax, 'architecture': arch,
      'resample_filter': _filter_taps(sd, 'synthesis.b4.resample_filter'),
      'use_noise': 'synthesis.b4.conv1.noise_strength' in sd,
  }
  return _apply_overrides(config, overrides)


def infer_discriminator_config(sd: Mapping[str, np.ndarray], **overrides: Any) -> dict[str, Any]:
  """The `stylegan2_ada.Discriminator` config of an official D state dict."""
  what = DISCRIMINATOR
  resolutions = [r for r in _indices(sd, r'b(\d+)\.') if r > 4]
  if not resolutions or 'b4.conv.weight' not in sd:
    raise _fail(what, 'no b{R}.* blocks and b4.conv epilogue', 'b{R} … b8 blocks and b4.conv/fc/out')
  res_max = resolutions[-1]
  try:
    expected = sg.block_resolutions(res_max)[1:]
  except ValueError as e:
    raise _fail(what, f'top block b{res_max}', 'a power-of-two resolution ≥ 8') from e
  if resolutions != expected:
    raise _fail(what, f'blocks {["b%d" % r for r in resolutions]}',
                f'blocks {["b%d" % r for r in expected]}')
  chans = {r: _shape(sd, f'b{r}.conv0.weight', what)[0] for r in resolutions}
  chans[4] = _shape(sd, 'b4.conv.weight', what)[0]
  base, cmax = infer_channels(chans, what)
  if any(f'b{r}.skip.weight' in sd for r in resolutions):
    arch = 'resnet'
  elif 'b4.fromrgb.weight' in sd:
    arch = 'skip'
  else:
    arch = 'orig'
  config = {
      'name': what, 'c_dim': 0, 'img_resolution': res_max,
      'img_channels': _shape(sd, f'b{res_max}.fromrgb.weight', what)[1],
      'architecture': arch, 'channel_base': base, 'channel_max': cmax,
      'resample_filter': _filter_taps(sd, f'b{res_max}.resample_filter'),
      'mbstd_num_channels': _shape(sd, 'b4.conv.weight', what)[1] - chans[4],
  }
  if 'mapping.embed.weight' in sd:
    m = _mapping_config(sd, what)
    config.update(c_dim=m['c_dim'], mapping_layers=m['mapping_layers'],
                  cmap_dim=m['out'] if m['out'] != chans[4] else None)
  return _apply_overrides(config, overrides)


# ---------------------------------------------------------------------------------------------
# Conversion.


def _check(sd: Mapping[str, np.ndarray], shapes: Mapping[str, Shape], what: str) -> None:
  missing = [k for k in shapes if k not in sd]
  extra = [k for k in sd if k not in shapes]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'missing keys {missing[:3]}{" …" if len(missing) > 3 else ""} '
                   f'({len(missing)} in all)')
    if extra:
      parts.append(f'unexpected keys {extra[:3]}{" …" if len(extra) > 3 else ""} '
                   f'({len(extra)} in all)')
    raise _fail(what, '; '.join(parts), f'the {len(shapes)} keys of the inferred architecture')
  for k, shape in shapes.items():
    got = tuple(np.shape(sd[k]))
    if got != shape:
      raise _fail(what, f'{k!r} has shape {list(got)}', f'{list(shape)} for the inferred architecture')
    dtype = np.asarray(sd[k]).dtype
    if not np.issubdtype(dtype, np.floating):
      raise _fail(what, f'{k!r} has dtype {dtype}', 'a floating-point tensor')


def build(config: Mapping[str, Any]) -> sg.Generator | sg.Discriminator:
  """The Flax module of a config returned by the `*_from_state_dict` functions."""
  return MODELS[config['name']](**{k: v for k, v in config.items() if k != 'name'})


def _from_state_dict(sd: Mapping[str, np.ndarray], config: dict[str, Any]
                     ) -> tuple[dict[str, Any], dict[str, PyTree]]:
  shapes = state_dict_shapes(config)
  _check(sd, shapes, config['name'])
  variables: dict[str, PyTree] = {'params': {}, sg.BUFFERS: {}}
  for key in shapes:
    collection, path = _flax_path(key)
    tree = variables[collection]
    for part in path[:-1]:
      tree = tree.setdefault(part, {})
    tree[path[-1]] = np.asarray(sd[key])
  return config, variables


def generator_from_state_dict(state: Mapping[str, np.ndarray], **overrides: Any
                              ) -> tuple[dict[str, Any], dict[str, PyTree]]:
  """An official G (or G_ema) state dict → (config, Flax variables) of `stylegan2_ada.Generator`.

  Args:
    state: key → array, as `G.state_dict()` (torch layout, float32).
    **overrides: Generator fields the state dict cannot tell (conv_clamp, mapping_lr_multiplier,
      w_avg_beta, fused_modconv, …) or that should replace an inferred value.
  Returns:
    (config with 'name', variables {'params', 'buffers'}); `build(config).apply(variables, z, c)`.
  Raises:
    CheckpointError: another network, missing or unexpected keys, or wrong shapes, naming the
      first offending keys and what was expected.
  """
  return _from_state_dict(state, infer_generator_config(state, **overrides))


def discriminator_from_state_dict(state: Mapping[str, np.ndarray], **overrides: Any
                                  ) -> tuple[dict[str, Any], dict[str, PyTree]]:
  """An official D state dict → (config, Flax variables) of `stylegan2_ada.Discriminator`.

  Overrides as for the generator (mbstd_group_size, conv_clamp, mapping_lr_multiplier, …).
  """
  return _from_state_dict(state, infer_discriminator_config(state, **overrides))


def to_state_dict(config: Mapping[str, Any], variables: Mapping[str, PyTree]
                  ) -> dict[str, np.ndarray]:
  """The exact inverse: Flax variables → the official state dict (keys in state_dict() order,
  torch layout, dtypes kept), which the official `load_state_dict` accepts.

  Raises:
    CheckpointError: variables that do not match `config` (a missing leaf or a wrong shape).
  """
  out = {}
  for key, shape in state_dict_shapes(config).items():
    collection, path = _flax_path(key)
    tree: Any = variables.get(collection, {})
    try:
      for part in path:
        tree = tree[part]
    except (KeyError, TypeError) as e:
      raise errors.CheckpointError(f'variables lack {collection}/{"/".join(path)} (state-dict key '
                                   f'{key!r}) that config {config["name"]} needs.') from e
    value = np.asarray(tree)
    if value.shape != shape:
      raise errors.CheckpointError(f'{collection}/{"/".join(path)} has shape {list(value.shape)}; '
                                   f'{key!r} needs {list(shape)}.')
    out[key] = value
  return out
