"""torchvision ResNet/MobileNetV2 state dicts ↔ kd_jax: golden outputs, inference, round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import golden_file
from kd_jax import errors
from kd_jax.convert import formats
from kd_jax.convert import torchvision as tv
from kd_jax.models import features as features_lib
from kd_jax.models import get

# npz feature name (torch module, stored NCHW) → kd_jax module path.
PATHS = {
    'resnet18_1111': {'maxpool': 'maxpool', 'layer1': 'layer1', 'layer2': 'layer2',
                      'layer3': 'layer3', 'layer4': 'layer4', 'avgpool': 'avgpool'},
    'mobilenet_v2_w05': {'features.0': 'features/0', 'features.1': 'features/1',
                         'features.2': 'features/2', 'features': 'features'},
}
FORMATS = {'resnet18_1111': ('.safetensors',), 'mobilenet_v2_w05': ('.safetensors', '.pth')}



def _keys_txt(case):
  with open(golden_file(f'{case}_keys.txt')) as f:
    return [line.split('\t')[0] for line in f if line.strip() and not line.startswith('#')]


def build(config):
  return get(config['name'], **{k: v for k, v in config.items() if k != 'name'})


def flax_only(variables):
  return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}


@pytest.fixture(scope='module', params=sorted(PATHS))
def case(request):
  """One golden case: its npz, state dicts per format, and a jit-compiled apply (compiled once)."""
  name = request.param
  npz = dict(np.load(golden_file(f'{name}.npz')))
  states = {ext: formats.load_state_dict(golden_file(name + ext)) for ext in FORMATS[name]}
  config, _ = tv.to_flax(states['.safetensors'])
  model = build(config)
  paths = tuple(PATHS[name].values())
  apply = jax.jit(
      lambda v, x: features_lib.apply_with_features(model, v, x, paths, train=False)[:2])
  return name, npz, states, config, apply


def _close(out, golden, what):
  out = np.asarray(out, np.float64)
  if out.ndim == 4:
    out = out.transpose(0, 3, 1, 2)  # NHWC → the stored NCHW
  elif golden.ndim == 4:
    out = out[:, :, None, None]      # pooled [B, C] vs torch's avgpool [B, C, 1, 1]
  assert out.shape == golden.shape, what
  err = np.max(np.abs(out - golden)) / np.max(np.abs(golden))
  assert err <= 1e-4, f'{what}: max error {err:.2e} of max |golden|'
  return err


def test_golden_outputs_from_every_format(case):
  name, npz, states, config, apply = case
  sizes = sorted({int(k.split('_')[-1]) for k in npz if k.startswith('x_')})
  for ext, state in states.items():
    cfg, variables = tv.to_flax(state)
    assert cfg == config
    for size in sizes:
      x = jnp.asarray(npz[f'x_{size}'].transpose(0, 2, 3, 1))
      logits, feats = apply(flax_only(variables), x)
      _close(logits, npz[f'logits_{size}'], f'{name}{ext} logits_{size}')
      _close(logits, npz[f'logits_{size}_f64'], f'{name}{ext} logits_{size}_f64')
      for torch_name, path in PATHS[name].items():
        _close(feats[path], npz[f'{torch_name}_{size}'], f'{name}{ext} {torch_name}_{size}')
  stored = {k for k in npz if not k.startswith('x_')}
  checked = {f'{t}_{s}' for t in PATHS[name] for s in sizes} | {
      f'logits_{s}{f}' for s in sizes for f in ('', '_f64')}
  assert stored == checked, 'every stored output is compared'


def test_golden_config_and_bitwise_round_trip(case):
  name, _, states, config, _ = case
  expected = {'resnet18_1111': {'name': 'torchvision_resnet', 'num_classes': 10, 'block': 'basic',
                                'layers': [1, 1, 1, 1], 'groups': 1, 'width_per_group': 64},
              'mobilenet_v2_w05': {'name': 'torchvision_mobilenet_v2', 'num_classes': 10,
                                   'width_mult': 0.5}}[name]
  assert config == expected
  for state in states.values():
    back = tv.to_torch(*tv.to_flax(state))
    assert list(back) == _keys_txt(name)  # torchvision's state_dict() order
    assert sorted(back) == sorted(state)
    for key, value in state.items():
      assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
      assert np.array_equal(back[key], value), key


# --- other architectures, built in NumPy from torchvision's layout (not from kd_jax's) ---

def resnet_state_dict(block, layers, groups=1, width_per_group=64, num_classes=7, seed=0):
  """A random state dict with the keys and shapes torchvision's ResNet(...) has, in its order."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(key, o, i, k):
    w = rng.standard_normal((o, i, k, k)) / np.sqrt(i * k * k)
    sd[key + '.weight'] = w.astype(np.float32)

  def bn(key, c):
    sd[key + '.weight'] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[key + '.bias'] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    sd[key + '.running_mean'] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    sd[key + '.running_var'] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[key + '.num_batches_tracked'] = np.array(rng.integers(0, 100), np.int64)

  expansion = 4 if block == 'bottleneck' else 1
  conv('conv1', 64, 3, 7)
  bn('bn1', 64)
  inplanes = 64
  for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
    for j in range(n):
      p = f'layer{i + 1}.{j}'
      stride = 2 if i > 0 and j == 0 else 1
      if block == 'basic':
        conv(p + '.conv1', planes, inplanes, 3)
        bn(p + '.bn1', planes)
        conv(p + '.conv2', planes, planes, 3)
        bn(p + '.bn2', planes)
      else:
        width = int(planes * width_per_group / 64) * groups
        conv(p + '.conv1', width, inplanes, 1)
        bn(p + '.bn1', width)
        conv(p + '.conv2', width, width // groups, 3)
        bn(p + '.bn2', width)
        conv(p + '.conv3', planes * expansion, width, 1)
        bn(p + '.bn3', planes * expansion)
      if j == 0 and (stride != 1 or inplanes != planes * expansion):
        conv(p + '.downsample.0', planes * expansion, inplanes, 1)
        bn(p + '.downsample.1', planes * expansion)
      inplanes = planes * expansion
  sd['fc.weight'] = (rng.standard_normal((num_classes, inplanes)) / np.sqrt(inplanes)).astype(
      np.float32)
  sd['fc.bias'] = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
  return sd


def _np_conv(x, w, stride, pad, groups=1):
  """torch's conv2d in float64 NumPy: x [N, C, H, W], w [O, C/groups, k, k]."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = w.shape[-1]
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
  n, c, h, wd = win.shape[:4]
  win = win.reshape(n, groups, c // groups, h, wd, k, k)
  wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
  return np.einsum('ngchwij,gocij->ngohw', win, wg).reshape(n, -1, h, wd)


def _np_resnet(sd, config, x):
  """Float64 NumPy forward of torchvision's Bottleneck ResNet (eval mode), returns logits."""
  g = {k: v.astype(np.float64) for k, v in sd.items()}

  def bn(key, y):
    scale = g[key + '.weight'] / np.sqrt(g[key + '.running_var'] + 1e-5)
    return ((y - g[key + '.running_mean'][:, None, None]) * scale[:, None, None]
            + g[key + '.bias'][:, None, None])

  relu = lambda y: np.maximum(y, 0)
  y = relu(bn('bn1', _np_conv(x, g['conv1.weight'], 2, 3)))
  y = np.pad(y, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  y = np.lib.stride_tricks.sliding_window_view(y, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max((-1, -2))
  for i, n in enumerate(config['layers']):
    for j in range(n):
      p = f'layer{i + 1}.{j}'
      stride = 2 if i > 0 and j == 0 else 1
      z = relu(bn(p + '.bn1', _np_conv(y, g[p + '.conv1.weight'], 1, 0)))
      z = relu(bn(p + '.bn2', _np_conv(z, g[p + '.conv2.weight'], stride, 1, config['groups'])))
      z = bn(p + '.bn3', _np_conv(z, g[p + '.conv3.weight'], 1, 0))
      if p + '.downsample.0.weight' in g:
        y = bn(p + '.downsample.1', _np_conv(y, g[p + '.downsample.0.weight'], stride, 0))
      y = relu(y + z)
  return y.mean((2, 3)) @ g['fc.weight'].T + g['fc.bias']


def test_other_resnet_is_inferred_round_trips_and_runs():
  sd = resnet_state_dict('bottleneck', [1, 2, 1, 1], groups=2, width_per_group=16)
  config, variables = tv.to_flax(sd)
  assert config == {'name': 'torchvision_resnet', 'num_classes': 7, 'block': 'bottleneck',
                    'layers': [1, 2, 1, 1], 'groups': 2, 'width_per_group': 16}
  back = tv.to_torch(config, variables)
  assert list(back) == list(sd)
  assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in sd.items())
  x = np.random.default_rng(1).standard_normal((2, 3, 40, 40)).astype(np.float32)
  logits = build(config).apply(flax_only(variables), jnp.asarray(x.transpose(0, 2, 3, 1)))
  want = _np_resnet(sd, config, x.astype(np.float64))
  assert np.max(np.abs(np.asarray(logits) - want)) <= 1e-4 * np.max(np.abs(want))


def test_other_basic_resnet_is_inferred():
  sd = resnet_state_dict('basic', [2, 1, 3, 1], num_classes=3)
  config, variables = tv.to_flax(sd)
  assert config['block'] == 'basic' and config['layers'] == [2, 1, 3, 1]
  back = tv.to_torch(config, variables)
  assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize('width_mult', [0.35, 0.75, 1.0, 1.4])
def test_mobilenet_width_mult_is_inferred(width_mult):
  from kd_jax.models import torchvision_mobilenet_v2 as tv_mobilenet
  config = {'name': 'torchvision_mobilenet_v2', 'num_classes': 5, 'width_mult': width_mult}
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: build(config).init(jax.random.key(0), x))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape).astype(np.float32),
                                     variables)
  sd = tv.to_torch(config, variables)
  got, again = tv.to_flax(sd)
  assert tv_mobilenet.channels(got['width_mult']) == tv_mobilenet.channels(width_mult)
  assert got['num_classes'] == 5
  back = tv.to_torch(got, again)
  assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)


# --- bad input: one CheckpointError naming the first offending keys ---

def test_bad_state_dicts_are_refused_by_name():
  sd = resnet_state_dict('basic', [1, 1, 1, 1])
  missing = {k: v for k, v in sd.items() if k != 'layer2.0.bn1.running_var'}
  with pytest.raises(errors.CheckpointError, match=r"missing keys \['layer2.0.bn1.running_var'\]"):
    tv.to_flax(missing)
  extra = {**sd, 'layer2.0.se.weight': np.zeros(3, np.float32)}
  with pytest.raises(errors.CheckpointError, match=r"unexpected keys \['layer2.0.se.weight'\]"):
    tv.to_flax(extra)
  wrong = {**sd, 'layer3.0.conv2.weight': np.zeros((256, 256, 5, 5), np.float32)}
  with pytest.raises(errors.CheckpointError,
                     match=r"'layer3.0.conv2.weight' has shape \[256, 256, 5, 5\]; expected "
                     r'\[256, 256, 3, 3\]'):
    tv.to_flax(wrong)
  with pytest.raises(errors.CheckpointError, match="arch='mobilenet_v2' but the state dict is a "
                     'torchvision resnet'):
    tv.to_flax(sd, 'mobilenet_v2')
  wrapped = {f'module.{k}': v for k, v in sd.items()}
  with pytest.raises(errors.CheckpointError, match='neither a torchvision ResNet'):
    tv.to_flax(wrapped)


def test_bad_mobilenet_state_dicts_are_refused_by_name():
  sd = formats.load_state_dict(golden_file('mobilenet_v2_w05.safetensors'))
  short = {k: v for k, v in sd.items() if not k.startswith('features.17.')}
  short = {k.replace('features.18.', 'features.17.'): v for k, v in short.items()}
  with pytest.raises(errors.CheckpointError, match='it has 18 feature layers'):
    tv.to_flax(short)
  odd = dict(sd)
  odd['features.3.conv.2.weight'] = np.zeros((20, 48 * 2, 1, 1), np.float32)
  with pytest.raises(errors.CheckpointError, match="no width_mult gives its channel widths "
                     r"\('features.3.conv.2.weight' has 20"):
    tv.to_flax(odd)
