"""kd_jax.models.features: listing and capturing submodule outputs by path, inside jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import errors, models
from kd_jax.models import features
from test_models import fast_init

B = 2


@pytest.fixture(scope='module')
def resnet():
  module = models.get('resnet20', width=4, num_classes=5)
  x = jax.random.normal(jax.random.key(0), (B, 28, 28, 1))
  return module, fast_init(module, x, train=False), x


def test_feature_paths_lists_submodules_parents_first(resnet):
  module, variables, x = resnet
  paths = features.feature_paths(module, variables, x, train=False)
  for p in ('stem', 'stage1', 'stage2/block0', 'stage3/block2', 'stage3/block2/conv2/bn',
            'features', 'head'):
    assert p in paths
  assert '' not in paths and 'stage4' not in paths
  assert paths.index('stage2') < paths.index('stage2/block0') < paths.index('stage2/block0/conv1')
  assert paths.index('stage1') < paths.index('stage2') < paths.index('features')


def test_apply_with_features_inside_jit_matches_apply(resnet):
  module, variables, x = resnet
  paths = ('stage2', 'stage3/block1', 'stage3', 'features')

  @jax.jit
  def run(v, x):
    return features.apply_with_features(module, v, x, paths, train=False)

  logits, feats, state = run(variables, x)
  np.testing.assert_allclose(logits, jax.jit(lambda v, x: module.apply(v, x))(variables, x),
                             rtol=1e-6, atol=1e-6)
  assert set(feats) == set(paths)
  assert feats['stage2'].shape == (B, 14, 14, 8)
  assert feats['stage3/block1'].shape == (B, 7, 7, 16)
  assert feats['features'].shape == (B, 16)
  # The penultimate embedding is the spatial mean of the last stage's output.
  np.testing.assert_allclose(feats['features'], feats['stage3'].mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)
  assert state == {}


def test_train_mode_updates_mutable_state_only(resnet):
  module, variables, x = resnet
  out, feats, state = jax.jit(lambda v, x: features.apply_with_features(
      module, v, x, ['stem'], train=True, mutable=['batch_stats']))(variables, x)
  assert set(state) == {'batch_stats'}
  assert not np.allclose(state['batch_stats']['stem']['bn']['mean'],
                         variables['batch_stats']['stem']['bn']['mean'])
  assert feats['stem'].shape == (B, 28, 28, 4)
  assert out.shape == (B, 5)


def test_no_paths_returns_empty_features(resnet):
  module, variables, x = resnet
  out, feats, state = jax.eval_shape(
      lambda v: features.apply_with_features(module, v, x, [], train=False), variables)
  assert feats == {} and state == {} and out.shape == (B, 5)


def test_bad_path_names_closest_and_fix(resnet):
  module, variables, x = resnet
  with pytest.raises(errors.ConfigError) as info:
    jax.jit(lambda v, x: features.apply_with_features(
        module, v, x, ['stage2', 'stage4/block0'], train=False))(variables, x)
  msg = str(info.value)
  assert "'stage4/block0' (closest: stage3/block0" in msg
  assert 'valid paths: stem, stem/conv' in msg and 'features, head' in msg
  assert 'Name the layer by one of these paths' in msg and 'config' not in msg
  assert "'stage2'" not in msg.split(' does not exist')[0]


def test_generator_features_with_labels_and_noise():
  g = models.get('stylegan2_generator', width=4, latent_dim=8, w_dim=8, mapping_layers=1,
                 resolution=16, num_classes=3, equalized_lr=False)
  z = jnp.ones((B, 8))
  y = jnp.array([0, 2])
  variables = fast_init(g, z, y, train=False)
  paths = features.feature_paths(g, variables, z, labels=y, train=False)
  assert {'mapping', 'const', 'block0', 'block2/conv0', 'to_rgb2'} <= set(paths)
  imgs, feats, _ = jax.jit(lambda v, z, y, k: features.apply_with_features(
      g, v, z, ['mapping', 'block1', 'block2'], train=False, labels=y, rngs={'noise': k}))(
          variables, z, y, jax.random.key(0))
  assert imgs.shape == (B, 16, 16, 3)
  assert feats['mapping'].shape == (B, 8)
  assert feats['block1'].shape == (B, 8, 8, 8)
  assert feats['block2'].shape == (B, 16, 16, 4)

  d = models.get('dcgan_generator', width=4, latent_dim=8, resolution=28, channels=1)
  variables = fast_init(d, z, train=False)
  feats = jax.eval_shape(lambda v: features.apply_with_features(
      d, v, z, ['project', 'block1'], train=False)[1], variables)
  assert feats['project'].shape == (B, 7, 7, 16)
  assert feats['block1'].shape == (B, 28, 28, 4)


@pytest.mark.parametrize('name, path, shape', [
    ('stylegan2_discriminator', 'fc', (B, 16)),
    ('stylegan2_discriminator', 'block0', (B, 14, 14, 8)),
    ('dcgan_discriminator', 'features', (B, 7 * 7 * 8)),
    ('conv_autoencoder', 'latent', (B, 7, 7, 3)),
    ('conv_autoencoder', 'encoder/block1', (B, 7, 7, 16)),
    ('conv_autoencoder', 'decoder/block0', (B, 14, 14, 8)),
])
def test_image_model_features(name, path, shape):
  kwargs = {'latent_dim': 3} if name == 'conv_autoencoder' else {}
  module = models.get(name, width=4, **kwargs)
  x = jnp.ones((B, 28, 28, 1))
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  feats = jax.eval_shape(lambda v: features.apply_with_features(
      module, v, x, [path], train=False)[1], variables)
  assert feats[path].shape == shape
