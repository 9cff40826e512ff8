"""torchvision ResNet / MobileNetV2 state dicts ↔ kd_jax variables, inferring the architecture.

`to_flax` reads the architecture from the state dict's keys and shapes (block type, blocks per
stage, groups and width per group, width multiplier, classes), builds the matching kd_jax model
(`torchvision_resnet`, `torchvision_mobilenet_v2`), checks every key and shape against it, and
moves the tensors into Flax layout. `to_torch` is its exact inverse, so a kd_jax student exports to
a state dict that torchvision's own constructor loads.

Layouts: conv OIHW ↔ HWIO, Linear [out, in] ↔ Dense [in, out], BatchNorm weight/bias/running_* ↔
params scale/bias and batch_stats mean/var. torch's `num_batches_tracked` (unused by Flax) travels
in the extra collection `torch_buffers`, which `Module.apply` ignores.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import errors
from kd_jax.models import features as features_lib
from kd_jax.models import registry
from kd_jax.models import torchvision_mobilenet_v2 as tv_mobilenet
from kd_jax.types import PyTree

ARCHS = ('resnet', 'mobilenet_v2')
MODEL_NAMES = {'resnet': 'torchvision_resnet', 'mobilenet_v2': 'torchvision_mobilenet_v2'}
BUFFERS = 'torch_buffers'
_COUNT = 'num_batches_tracked'
# A torch module's tensors in state_dict() order, per kind of layer.
_BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', _COUNT)


@dataclasses.dataclass(frozen=True)
class _Leaf:
  key: str                    # torch key, e.g. 'layer1.0.bn1.running_var'
  collection: str             # Flax collection: 'params', 'batch_stats' or BUFFERS
  path: tuple[str, ...]       # Flax path inside the collection, e.g. ('layer1', '0', 'bn1', 'var')
  torch_shape: tuple[int, ...]
  layout: str                 # 'conv', 'linear' or 'same'
  dtype: np.dtype


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for part in path:
    tree = tree[part]
  return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


def _layout(config: Mapping[str, Any]) -> tuple[_Leaf, ...]:
  """Every torch tensor of the model `config`, in torchvision's state_dict() order."""
  return _layout_of(json.dumps(dict(config), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _layout_of(config_json: str) -> tuple[_Leaf, ...]:
  # Tracing the model takes a second or two; imports and exports of one architecture reuse it.
  config = json.loads(config_json)
  model = registry.get(config['name'], **{k: v for k, v in config.items() if k != 'name'})
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  params, stats = abstract['params'], abstract.get('batch_stats', {})
  # Leaf modules in call order: torchvision registers its layers in the order forward uses them.
  paths = features_lib.feature_paths(model, abstract, x)
  leaves = []
  for path in paths:
    parts = tuple(path.split('/'))
    try:
      mine = _get(params, parts)
    except KeyError:
      continue
    if not isinstance(mine, Mapping) or any(isinstance(v, Mapping) for v in mine.values()):
      continue
    prefix = '.'.join(parts)
    f32 = np.dtype(np.float32)
    if 'scale' in mine:  # BatchNorm
      stat = _get(stats, parts)
      sources = (('params', 'scale', mine['scale']), ('params', 'bias', mine['bias']),
                 ('batch_stats', 'mean', stat['mean']), ('batch_stats', 'var', stat['var']))
      for torch_name, (collection, name, leaf) in zip(_BN_KEYS, sources):
        leaves.append(_Leaf(f'{prefix}.{torch_name}', collection, parts + (name,),
                            tuple(leaf.shape), 'same', f32))
      leaves.append(_Leaf(f'{prefix}.{_COUNT}', BUFFERS, parts + (_COUNT,), (),
                          'same', np.dtype(np.int64)))
      continue
    kernel = mine['kernel']
    if kernel.ndim == 4:
      h, w, i, o = kernel.shape
      leaves.append(_Leaf(f'{prefix}.weight', 'params', parts + ('kernel',), (o, i, h, w),
                          'conv', f32))
    else:
      leaves.append(_Leaf(f'{prefix}.weight', 'params', parts + ('kernel',),
                          tuple(kernel.shape[::-1]), 'linear', f32))
    if 'bias' in mine:
      leaves.append(_Leaf(f'{prefix}.bias', 'params', parts + ('bias',),
                          tuple(mine['bias'].shape), 'same', f32))
  return tuple(leaves)


def _fail(what: str, detail: str, expected: str) -> errors.CheckpointError:
  return errors.CheckpointError(f'state dict is not {what}: {detail}; expected {expected}.')


def _block_indices(state_dict: Mapping[str, np.ndarray], prefix: str) -> list[int]:
  pattern = re.compile(re.escape(prefix) + r'\.(\d+)\.')
  return sorted({int(m.group(1)) for k in state_dict if (m := pattern.match(k))})


def _infer_resnet(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
  what = 'a torchvision ResNet'
  for key in ('conv1.weight', 'fc.weight', 'layer1.0.conv1.weight', 'layer1.0.conv2.weight'):
    if key not in sd:
      raise _fail(what, f'key {key!r} is missing', "torchvision ResNet keys ('conv1.weight', "
                  "'layer1.0.conv1.weight', ..., 'fc.weight')")
  counts = []
  for i in range(1, 5):
    idx = _block_indices(sd, f'layer{i}')
    if not idx:
      raise _fail(what, f'it has no blocks layer{i}.<j>', 'four stages layer1..layer4')
    counts.append(max(idx) + 1)  # gaps show up as missing keys below
  block = 'bottleneck' if 'layer1.0.conv3.weight' in sd else 'basic'
  config = {'name': MODEL_NAMES['resnet'], 'num_classes': int(sd['fc.weight'].shape[0]),
            'block': block, 'layers': counts, 'groups': 1, 'width_per_group': 64}
  if block == 'bottleneck':
    w = sd['layer1.0.conv2.weight']
    if w.ndim != 4 or w.shape[1] == 0 or w.shape[0] % w.shape[1]:
      raise _fail(what, f"'layer1.0.conv2.weight' has shape {list(w.shape)}",
                  '[width, width/groups, 3, 3]')
    groups = w.shape[0] // w.shape[1]
    config.update(groups=int(groups), width_per_group=int(w.shape[0] // groups))
  return config


def _mobilenet_widths(sd: Mapping[str, np.ndarray], n: int) -> list[tuple[str, int]]:
  """(key, out channels) of the stem, every block's projection and the last conv, as stored."""
  what = 'a torchvision MobileNetV2'
  out = []
  for i in range(n):
    convs = [k for k in sd if re.fullmatch(rf'features\.{i}\.(conv\.\d+|\d+)\.weight', k)
             and sd[k].ndim == 4]
    if not convs:
      raise _fail(what, f'features.{i} has no conv weight', 'a conv in every features.<i>')
    # Projection of a block: the highest-numbered plain conv (conv.<j>.weight, 4-d).
    key = max(convs, key=lambda k: [int(p) for p in re.findall(r'\d+', k)])
    out.append((key, int(sd[key].shape[0])))
  return out


def _width_mult_candidates(bases: list[int], widths: list[int]) -> Iterator[float]:
  # Every block width is a step function of width_mult; its steps sit where c·α crosses a
  # multiple of 8 ± 4 (rounding) or a 0.9 threshold. Trying round values first, then those step
  # points and the midpoints between them, finds an α that reproduces all widths whenever one
  # exists.
  points = set()
  for b, o in zip(bases, widths):
    points.update(((o - 4) / b, o / b, (o + 4) / b, o / (0.9 * b)))
  points = sorted(p for p in points if p > 0)
  mids = [(a + b) / 2 for a, b in zip(points, points[1:])]
  for digits in (1, 2, 3, 4, 6):
    for p in points + mids:
      yield round(p, digits)
  yield from points
  yield from mids


def _infer_mobilenet_v2(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
  what = 'a torchvision MobileNetV2'
  if 'classifier.1.weight' not in sd or 'features.0.0.weight' not in sd:
    raise _fail(what, "key 'features.0.0.weight' or 'classifier.1.weight' is missing",
                'torchvision mobilenet_v2 keys')
  n = max(_block_indices(sd, 'features')) + 1
  blocks = sum(s[2] for s in tv_mobilenet.SETTING)
  if n != blocks + 2:
    raise _fail(what, f'it has {n} feature layers (features.0..features.{n - 1})',
                f'{blocks + 2}: the stem, {blocks} inverted residuals of torchvision\'s default '
                'inverted_residual_setting and the last 1×1 conv')
  found = _mobilenet_widths(sd, n)
  bases = ([tv_mobilenet.STEM_CHANNELS] + [c for _, c, k, _ in tv_mobilenet.SETTING
                                            for _ in range(k)] + [tv_mobilenet.LAST_CHANNELS])
  widths = [w for _, w in found]

  def make(alpha: float) -> list[int]:
    c = tv_mobilenet.channels(alpha)
    return [c['stem']] + [b[1] for b in c['blocks']] + [c['last']]

  for alpha in itertools.islice(_width_mult_candidates(bases, widths), 20000):
    if make(alpha) == widths:
      return {'name': MODEL_NAMES['mobilenet_v2'],
              'num_classes': int(sd['classifier.1.weight'].shape[0]), 'width_mult': alpha}
  guess = make(widths[0] / tv_mobilenet.STEM_CHANNELS)
  key, have = next((k, w) for (k, w), e in zip(found, guess) if w != e)
  raise _fail(what, f'no width_mult gives its channel widths ({key!r} has {have} output '
              'channels)', 'widths rounded by torchvision\'s _make_divisible(c·width_mult, 8) '
              f'(with width_mult={widths[0] / tv_mobilenet.STEM_CHANNELS:g}: {guess})')


def infer_arch(state_dict: Mapping[str, np.ndarray]) -> str:
  """'resnet' or 'mobilenet_v2', from the keys; CheckpointError for anything else."""
  if 'fc.weight' in state_dict and 'layer1.0.conv1.weight' in state_dict:
    return 'resnet'
  if 'classifier.1.weight' in state_dict and 'features.0.0.weight' in state_dict:
    return 'mobilenet_v2'
  keys = list(state_dict)[:3]
  raise errors.CheckpointError(
      f'state dict with keys {keys}... is neither a torchvision ResNet (keys conv1.weight, '
      'layer1.0.conv1.weight, ..., fc.weight) nor a MobileNetV2 (features.0.0.weight, ..., '
      'classifier.1.weight); a wrapped dict (e.g. {"model": ...} or "module." prefixes from '
      'DataParallel) must be unwrapped first.')


def infer_config(state_dict: Mapping[str, np.ndarray], arch: str | None = None) -> dict[str, Any]:
  """The kd_jax model config ({'name': ..., **kwargs}) whose layout `state_dict` has."""
  found = infer_arch(state_dict)
  if arch is not None and arch not in ARCHS:
    raise errors.ConfigError(f'arch={arch!r} is unknown; use one of {ARCHS} (or None to infer it).')
  if arch is not None and arch != found:
    raise errors.CheckpointError(f"arch={arch!r} but the state dict is a torchvision {found}.")
  return _infer_resnet(state_dict) if found == 'resnet' else _infer_mobilenet_v2(state_dict)


def _check(state_dict: Mapping[str, np.ndarray], leaves: tuple[_Leaf, ...],
           config: Mapping[str, Any]) -> None:
  what = f'the {config["name"]} {({k: v for k, v in config.items() if k != "name"})} its keys imply'
  want = {leaf.key: leaf for leaf in leaves}
  missing = [k for k in want if k not in state_dict]
  extra = [k for k in state_dict if k not in want]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'missing keys {missing[:3]}')
    if extra:
      parts.append(f'unexpected keys {extra[:3]}')
    raise _fail(what, ', '.join(parts), f'{len(want)} tensors, from {leaves[0].key!r} to '
                f'{leaves[-1].key!r}')
  for key, leaf in want.items():
    value = state_dict[key]
    if tuple(value.shape) != leaf.torch_shape:
      raise _fail(what, f'{key!r} has shape {list(value.shape)}', f'{list(leaf.torch_shape)}')
    kind = 'i' if leaf.dtype.kind == 'i' else 'f'
    if np.dtype(value.dtype).kind not in (kind, 'u' if kind == 'i' else 'V'):
      raise _fail(what, f'{key!r} has dtype {value.dtype}', f'{leaf.dtype}')


def to_flax(state_dict: Mapping[str, np.ndarray], arch: str | None = None
            ) -> tuple[dict[str, Any], dict[str, PyTree]]:
  """A torchvision ResNet/MobileNetV2 state dict as a kd_jax model config and Flax variables.

  Args:
    state_dict: {key: array} as `formats.load_state_dict` returns it (torch layout).
    arch: 'resnet' or 'mobilenet_v2' to insist on one; None infers it from the keys.

  Returns:
    (model config {'name': ..., **kwargs} for `kd_jax.models.get`, variables {'params',
    'batch_stats', 'torch_buffers'}) in NHWC/HWIO layout, same dtypes as stored.

  Raises:
    CheckpointError: another architecture, missing or unexpected keys, or wrong shapes, naming the
      first offending keys and what was expected.
  """
  config = infer_config(state_dict, arch)
  leaves = _layout(config)
  _check(state_dict, leaves, config)
  variables: dict[str, Any] = {}
  for leaf in leaves:
    value = np.asarray(state_dict[leaf.key])
    if leaf.layout == 'conv':
      value = value.transpose(2, 3, 1, 0)
    elif leaf.layout == 'linear':
      value = value.T
    _set(variables.setdefault(leaf.collection, {}), leaf.path, np.array(value, order='C'))
  return config, variables


def to_torch(model_config: Mapping[str, Any], variables: Mapping[str, PyTree]
             ) -> dict[str, np.ndarray]:
  """The exact inverse of `to_flax`: a state dict torchvision's constructor loads.

  Args:
    model_config: {'name': 'torchvision_resnet' | 'torchvision_mobilenet_v2', **kwargs}.
    variables: {'params', 'batch_stats'} and optionally 'torch_buffers'; without it (a student
      trained in kd_jax) every `num_batches_tracked` is 0, which only torch's momentum=None
      BatchNorm reads.

  Returns:
    {key: np.ndarray} in torchvision's state_dict() order and layout.

  Raises:
    CheckpointError: variables that do not match `model_config` (missing leaves or wrong shapes).
  """
  config = dict(model_config)
  if config.get('name') not in MODEL_NAMES.values():
    raise errors.ConfigError(f"model_config name {config.get('name')!r} cannot be exported to "
                             f'torchvision; supported: {sorted(MODEL_NAMES.values())}.')
  out: dict[str, np.ndarray] = {}
  for leaf in _layout(config):
    try:
      value = _get(variables[leaf.collection], leaf.path)
    except (KeyError, TypeError):
      if leaf.collection == BUFFERS:
        out[leaf.key] = np.zeros((), np.int64)
        continue
      raise errors.CheckpointError(
          f"variables do not match {config}: {leaf.collection}/{'/'.join(leaf.path)} (torch "
          f'{leaf.key!r}) is missing.') from None
    value = np.asarray(jax.device_get(value))
    if leaf.layout == 'conv':
      value = value.transpose(3, 2, 0, 1)
    elif leaf.layout == 'linear':
      value = value.T
    if tuple(value.shape) != leaf.torch_shape:
      raise errors.CheckpointError(
          f"variables do not match {config}: {leaf.collection}/{'/'.join(leaf.path)} gives torch "
          f'{leaf.key!r} shape {list(value.shape)}, expected {list(leaf.torch_shape)}.')
    out[leaf.key] = np.array(value, order='C')
  return out
