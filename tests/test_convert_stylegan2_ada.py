"""StyleGAN2-ADA import: the golden outputs of the official PyTorch code (../shared/golden), the
bitwise state-dict round trip, and inference of other architectures from Flax-made state dicts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import golden_file
from kd_jax import errors
from kd_jax.convert import stylegan2_ada as cv

TOL = 1e-4  # of each array's max |golden|, the golden README's suggestion



def _rel_err(got, want):
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def _nchw(x):
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def _nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))


@pytest.fixture(scope='module')
def golden():
  from safetensors.numpy import load_file
  gold = dict(np.load(golden_file('sg2ada_small.npz')))
  return {'npz': gold, 'G': load_file(golden_file('sg2ada_small_G.safetensors')),
          'D': load_file(golden_file('sg2ada_small_D.safetensors'))}


@pytest.fixture(scope='module')
def nets(golden):
  g_cfg, g_vars = cv.generator_from_state_dict(golden['G'])
  d_cfg, d_vars = cv.discriminator_from_state_dict(golden['D'])
  G, D = cv.build(g_cfg), cv.build(d_cfg)
  mapping = jax.jit(lambda v, z, psi: G.apply(v, z, None, truncation_psi=psi, method='mapping_fn'))
  synth = jax.jit(lambda v, ws: G.apply(v, ws, method=lambda m, ws: m.synthesis(ws, 'const', True,
                                                                                 return_blocks=True)))
  synth_none = jax.jit(lambda v, ws: G.apply(v, ws, 'none', method='synthesis_fn'))
  disc = jax.jit(lambda v, x: D.apply(v, x, return_blocks=True))
  return dict(g_cfg=g_cfg, g_vars=g_vars, d_cfg=d_cfg, d_vars=d_vars, G=G, D=D, mapping=mapping,
              synth=synth, synth_none=synth_none, disc=disc)


def test_inferred_configs(nets):
  g, d = nets['g_cfg'], nets['d_cfg']
  assert (g['z_dim'], g['c_dim'], g['w_dim'], g['img_resolution'], g['img_channels']) == (
      64, 0, 64, 32, 3)
  assert (g['mapping_layers'], g['channel_base'], g['channel_max'], g['architecture']) == (
      2, 2048, 64, 'skip')
  assert (d['img_resolution'], d['channel_base'], d['channel_max'], d['architecture'],
          d['mbstd_num_channels']) == (32, 2048, 64, 'resnet', 1)


def test_generator_reproduces_golden(golden, nets):
  gold, errs = golden['npz'], {}
  z = jnp.asarray(gold['z'])
  # One truncation value is traced (0.7), the other skips the lerp, like the official `psi != 1`.
  for psi, tag in ((1, '1'), (0.7, '0.7')):
    ws = nets['mapping'](nets['g_vars'], z, psi) if psi != 1 else jax.jit(
        lambda v, z: nets['G'].apply(v, z, None, method='mapping_fn'))(nets['g_vars'], z)
    errs[f'ws_psi{tag}'] = _rel_err(ws, gold[f'ws_psi{tag}'])
    img, blocks = nets['synth'](nets['g_vars'], ws)
    errs[f'img_psi{tag}_const'] = _rel_err(_nchw(img), gold[f'img_psi{tag}_const'])
    errs[f'img_psi{tag}_none'] = _rel_err(_nchw(nets['synth_none'](nets['g_vars'], ws)),
                                          gold[f'img_psi{tag}_none'])
    if psi == 1:
      for name, (x, im) in blocks.items():
        errs[f'G_inter/synthesis.{name}/0'] = _rel_err(_nchw(x[:2]), gold[f'G_inter/synthesis.{name}/0'])
        errs[f'G_inter/synthesis.{name}/1'] = _rel_err(_nchw(im[:2]),
                                                       gold[f'G_inter/synthesis.{name}/1'])
  img, blocks = nets['synth'](nets['g_vars'], jnp.asarray(gold['ws_rand']))
  errs['img_wsrand_const'] = _rel_err(_nchw(img), gold['img_wsrand_const'])
  errs['G_inter_wsrand/synthesis.b4/0'] = _rel_err(_nchw(blocks['b4'][0][:2]),
                                                   gold['G_inter_wsrand/synthesis.b4/0'])
  errs['G_inter_wsrand/synthesis.b4/1'] = _rel_err(_nchw(blocks['b4'][1][:2]),
                                                   gold['G_inter_wsrand/synthesis.b4/1'])
  # The whole model in one call, as a teacher is used: z → image.
  full = jax.jit(lambda v, z: nets['G'].apply(v, z, None, truncation_psi=0.7))(nets['g_vars'], z)
  errs['G(z) psi0.7'] = _rel_err(_nchw(full), gold['img_psi0.7_const'])
  bad = {k: v for k, v in errs.items() if not v <= TOL}
  assert not bad, bad


def test_nonfused_modconv_same_math(golden, nets):
  g_cfg, g_vars = cv.generator_from_state_dict(golden['G'], fused_modconv=False)
  G = cv.build(g_cfg)
  img = jax.jit(lambda v, ws: G.apply(v, ws, method='synthesis_fn'))(
      g_vars, jnp.asarray(golden['npz']['ws_psi0.7']))
  assert _rel_err(_nchw(img), golden['npz']['img_psi0.7_const']) <= TOL


def test_discriminator_reproduces_golden(golden, nets):
  gold, errs = golden['npz'], {}
  for img_key, logit_key in (('img_psi1_const', 'D_logits_psi1_const'),
                             ('img_psi0.7_const', 'D_logits_psi0.7_const'),
                             ('d_input_randn', 'D_logits_randn')):
    logits, blocks = nets['disc'](nets['d_vars'], jnp.asarray(_nhwc(gold[img_key])))
    errs[logit_key] = _rel_err(logits, gold[logit_key])
  for name, x in blocks.items():  # d_input_randn's, the last one run
    key = f'D_inter/{name}' if name == 'b4' else f'D_inter/{name}/0'
    errs[key] = _rel_err(x[:2] if name == 'b4' else _nchw(x[:2]), gold[key])
  bad = {k: v for k, v in errs.items() if not v <= TOL}
  assert not bad, bad


@pytest.mark.parametrize('which', ['G', 'D'])
def test_round_trip_bitwise(golden, nets, which):
  sd = golden[which]
  cfg, variables = (nets['g_cfg'], nets['g_vars']) if which == 'G' else (nets['d_cfg'], nets['d_vars'])
  back = cv.to_state_dict(cfg, variables)
  assert sorted(back) == sorted(sd)
  for k, v in sd.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k


def test_pth_matches_safetensors(golden):
  try:
    from kd_jax.convert import formats
    load = formats.load_state_dict
  except (ImportError, AttributeError):
    pytest.skip('kd_jax.convert.formats.load_state_dict not available')
  for which in ('G', 'D'):
    sd = load(golden_file(f'sg2ada_small_{which}.pth'))
    assert sorted(sd) == sorted(golden[which])
    for k, v in golden[which].items():
      assert np.array_equal(np.asarray(sd[k]), v), k
    convert = cv.generator_from_state_dict if which == 'G' else cv.discriminator_from_state_dict
    convert(sd)


@pytest.mark.parametrize('which, drop', [('G', 'synthesis.b16.conv0.noise_const'),
                                         ('D', 'b16.skip.weight')])
def test_bad_state_dicts(golden, which, drop):
  convert = cv.generator_from_state_dict if which == 'G' else cv.discriminator_from_state_dict
  sd = dict(golden[which])
  missing = {k: v for k, v in sd.items() if k != drop}
  with pytest.raises(errors.CheckpointError, match=drop.replace('.', r'\.')):
    convert(missing)
  with pytest.raises(errors.CheckpointError, match='extra_thing'):
    convert({**sd, 'extra_thing.weight': np.zeros(3, np.float32)})
  key = next(k for k in sd if k.endswith('conv0.bias'))
  with pytest.raises(errors.CheckpointError, match=key.replace('.', r'\.') + '.*shape'):
    convert({**sd, key: np.zeros(7, np.float32)})
  with pytest.raises(errors.CheckpointError):
    convert(golden['D' if which == 'G' else 'G'])  # the other network


def _perturbed(variables, key):
  # Move every tensor off its init (zero biases and noise strengths would hide mix-ups).
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(tree, [
      np.asarray(x + 0.1 * jax.random.normal(k, x.shape, x.dtype)) for x, k in zip(leaves, keys)])


# Configs unlike the golden one: other resolution, channel_base/max (channels vary with res),
# mapping depth, conditioning, architectures, mbstd channels and cmap size.
OTHER_G = [
    dict(name=cv.GENERATOR, z_dim=8, c_dim=3, w_dim=16, img_resolution=16, img_channels=1,
         mapping_layers=3, channel_base=256, channel_max=32, architecture='resnet'),
    dict(name=cv.GENERATOR, z_dim=12, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
         mapping_layers=1, channel_base=64, channel_max=16, architecture='orig'),
]
OTHER_D = [
    dict(name=cv.DISCRIMINATOR, c_dim=3, img_resolution=16, img_channels=1, architecture='skip',
         channel_base=256, channel_max=32, mbstd_num_channels=2, mbstd_group_size=2, cmap_dim=12,
         mapping_layers=2),
    dict(name=cv.DISCRIMINATOR, c_dim=0, img_resolution=8, img_channels=3, architecture='orig',
         channel_base=64, channel_max=16),
]
_COMPARED = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_layers',
             'channel_base', 'channel_max', 'architecture', 'mbstd_num_channels', 'cmap_dim')


@pytest.mark.parametrize('cfg', OTHER_G, ids=['G16_resnet_cond', 'G8_orig'])
def test_generator_inference_other_configs(cfg):
  G = cv.build(cfg)
  z = jax.random.normal(jax.random.key(1), (2, cfg['z_dim']))
  c = jnp.array([0, 2]) if cfg['c_dim'] else None
  variables = _perturbed(G.init(jax.random.key(0), z, c), jax.random.key(2))
  sd = cv.to_state_dict(cfg, variables)
  cfg2, variables2 = cv.generator_from_state_dict(sd)
  assert {k: cfg2.get(k) for k in _COMPARED if k in cfg} == {k: cfg[k] for k in _COMPARED if k in cfg}
  assert jax.tree_util.tree_structure(variables2) == jax.tree_util.tree_structure(variables)
  run = lambda m, v: m.apply(v, z, c, truncation_psi=0.5, truncation_cutoff=2)  # noqa: E731
  want, got = run(G, variables), run(cv.build(cfg2), variables2)
  assert want.shape == (2, cfg['img_resolution'], cfg['img_resolution'], cfg['img_channels'])
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  sd2 = cv.to_state_dict(cfg2, variables2)
  assert list(sd2) == list(sd) and all(np.array_equal(sd2[k], sd[k]) for k in sd)
  # Random noise: from the 'noise' rng, reproducible with the same key, unlike const noise.
  rand = lambda k: G.apply(variables, z, c, noise_mode='random', rngs={'noise': k})  # noqa: E731
  a, b = rand(jax.random.key(5)), rand(jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(G.apply(variables, z, c)))


@pytest.mark.parametrize('cfg', OTHER_D, ids=['D16_skip_cond', 'D8_orig'])
def test_discriminator_inference_other_configs(cfg):
  D = cv.build(cfg)
  r, ch = cfg['img_resolution'], cfg['img_channels']
  x = jax.random.normal(jax.random.key(1), (4, r, r, ch))
  c = jax.nn.one_hot(jnp.array([0, 2, 1, 1]), cfg['c_dim']) if cfg['c_dim'] else None
  variables = _perturbed(D.init(jax.random.key(0), x, c), jax.random.key(2))
  sd = cv.to_state_dict(cfg, variables)
  overrides = {'mbstd_group_size': cfg['mbstd_group_size']} if 'mbstd_group_size' in cfg else {}
  cfg2, variables2 = cv.discriminator_from_state_dict(sd, **overrides)
  assert {k: cfg2.get(k) for k in _COMPARED if k in cfg} == {k: cfg[k] for k in _COMPARED if k in cfg}
  want, got = D.apply(variables, x, c), cv.build(cfg2).apply(variables2, x, c)
  assert want.shape == (4, 1)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
