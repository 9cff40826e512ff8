"""kd_jax.models: registry, shapes/dtypes at 28 and 32 px, BatchNorm modes, conditioning, noise."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import errors, models

# Tiny widths keep tracing/compilation fast; the architecture is the same at every width.
TINY = {
    'resnet': {'depth': 8, 'width': 4}, 'resnet20': {'width': 4}, 'resnet56': {'width': 2},
    'wrn': {'depth': 10, 'widen_factor': 1, 'width': 4}, 'small_cnn': {'width': 4},
    'mobilenet_v2': {'width_multiplier': 0.25},
    # torchvision's own layouts (imported teachers); their default is 1000 ImageNet classes.
    'torchvision_resnet': {'layers': (1, 1, 1, 1), 'num_classes': 10},
    'torchvision_mobilenet_v2': {'width_mult': 0.25, 'num_classes': 10},
    'dcgan_generator': {'width': 4, 'latent_dim': 8},
    'dcgan_discriminator': {'width': 4},
    # Plain (not equalised-lr) init matches fast_init's N(0, 1/fan_in); test_real_init covers it.
    'stylegan2_generator': {'width': 4, 'latent_dim': 8, 'w_dim': 8, 'mapping_layers': 2,
                            'equalized_lr': False},
    'stylegan2_discriminator': {'width': 4, 'equalized_lr': False},
    'conv_autoencoder': {'width': 4, 'latent_dim': 4},
    # NVIDIA's architecture under its official field names (power-of-two resolutions only).
    'stylegan2_ada_generator': {'z_dim': 8, 'c_dim': 0, 'w_dim': 8, 'mapping_layers': 2,
                                'channel_base': 64, 'channel_max': 8, 'fused_modconv': False},
    'stylegan2_ada_discriminator': {'c_dim': 0, 'channel_base': 64, 'channel_max': 8},
}
OFFICIAL = ('stylegan2_ada_generator', 'stylegan2_ada_discriminator')
SIZES = [(28, 1), (32, 3)]
B = 2


def fast_init(module, *args, seed=0, **kwargs):
  """Variables with the shapes `module.init` gives, filled on the host with N(0, 1/fan_in).

  A jitted real `init` spends seconds compiling its RNG calls; these tests check behaviour that
  does not depend on the initial values (test_real_init checks the real initialisers).
  Biases and BatchNorm statistics get their usual start (0; mean 0, var 1).
  """
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if "['var']" in name:
      return jnp.ones(s.shape, s.dtype)
    if "['mean']" in name or name.endswith("['bias']"):
      return jnp.zeros(s.shape, s.dtype)
    fan_in = int(np.prod(s.shape[:-1])) or 1
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def jitted(module, **static_kwargs):
  """`jax.jit` of `module.apply(variables, *args, **static_kwargs)`; reuse it across calls."""
  return jax.jit(lambda v, *a: module.apply(v, *a, **static_kwargs))


def _build(name, res, ch, **extra):
  kwargs = dict(TINY[name], **extra)
  if name in OFFICIAL:
    kwargs.update(img_resolution=res, img_channels=ch)
  elif models.kind(name) == 'generator':
    kwargs.update(resolution=res, channels=ch)
  return models.get(name, **kwargs)


def _input(module, name, res, ch, key=0):
  if models.kind(name) == 'generator':
    dim = module.z_dim if hasattr(module, 'z_dim') else module.latent_dim
    return jax.random.normal(jax.random.key(key), (B, dim))
  return jax.random.uniform(jax.random.key(key), (B, res, res, ch), minval=-1, maxval=1)


def test_registry_lists_every_family():
  assert set(TINY) | {'edm_unet'} == set(models.names())  # edm_unet: tests/test_diffusion.py
  assert {models.kind(n) for n in models.names()} == set(models.KINDS)
  assert models.kind('resnet20') == 'classifier'
  assert models.kind('stylegan2_generator') == 'generator'
  assert models.kind('dcgan_discriminator') == 'discriminator'
  assert models.kind('conv_autoencoder') == 'autoencoder'
  assert models.kind('edm_unet') == 'denoiser'


def test_unknown_model_names_known_ones():
  with pytest.raises(errors.ConfigError, match=r"unknown model 'resnet21'.*resnet20.*known:"):
    models.get('resnet21')
  with pytest.raises(errors.ConfigError, match='unknown model'):
    models.kind('nope')


def test_unknown_and_pinned_kwargs():
  with pytest.raises(errors.ConfigError,
                     match=r"'widht'.*did you mean 'width'.*valid: .*num_classes"):
    models.get('resnet20', widht=16)
  with pytest.raises(errors.ConfigError, match=r"fixes depth=20; drop the argument depth.*'resnet'"):
    models.get('resnet20', depth=32)
  assert 'depth' in models.valid_kwargs('resnet') and 'depth' not in models.valid_kwargs('resnet20')


@pytest.mark.parametrize('name, kwargs, field', [
    ('resnet', {'depth': 21}, 'depth'),
    ('wrn', {'depth': 20}, 'depth'),
    ('small_cnn', {'width': 0}, 'width'),
    ('dcgan_generator', {'upsample': 'cubic'}, 'upsample'),
    ('stylegan2_generator', {'noise_mode': 'sometimes'}, 'noise_mode'),
    ('conv_autoencoder', {'latent': 'sparse'}, 'latent'),
    ('dcgan_discriminator', {'norm': 'batch'}, 'norm'),
])
def test_bad_values_name_the_argument(name, kwargs, field):
  cls = type(models.get(name)).__name__
  with pytest.raises(errors.ConfigError, match=rf'^{cls}\.{field}=') as info:
    models.get(name, **kwargs)
  assert 'config' not in str(info.value)  # the trainer adds the config field (field_context)


@pytest.mark.parametrize('res, ch', SIZES)
@pytest.mark.parametrize('name', sorted(TINY))
def test_output_shapes_and_dtypes(name, res, ch):
  if name in OFFICIAL and res & (res - 1):
    pytest.skip('StyleGAN2-ADA builds power-of-two resolutions only (data.pad_to=32 for 28 px)')
  module = _build(name, res, ch)
  x = _input(module, name, res, ch)
  # Shapes only (no compilation): the numerical paths are exercised by the tests below.
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: module.apply(v, x, train=False), variables)
  expected = {'classifier': (B, 10), 'discriminator': (B,), 'generator': (B, res, res, ch),
              'autoencoder': (B, res, res, ch)}[models.kind(name)]
  if name == 'stylegan2_ada_discriminator':
    expected = (B, 1)  # the official [N, 1] logits; the GAN losses take [B] or [B, ...]
  assert out.shape == expected
  assert out.dtype == jnp.float32


@pytest.mark.parametrize('name', ['dcgan_generator', 'stylegan2_generator', 'conv_autoencoder'])
def test_image_outputs_are_in_tanh_range(name):
  module = _build(name, 28, 1)
  x = _input(module, name, 28, 1) * 10.0
  out = jitted(module, train=False)(fast_init(module, x, train=False), x)
  assert out.shape[1:] == (28, 28, 1)
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  assert float(jnp.std(out)) > 0.0


def test_real_init():
  name = 'stylegan2_generator'
  module = _build(name, 8, 1, equalized_lr=True)
  x = _input(module, name, 8, 1)
  # The 'rbg' key implementation compiles several times faster than threefry on CPU.
  out, variables = jax.jit(lambda k: module.init_with_output(k, x, train=False))(
      jax.random.key(0, impl='rbg'))
  assert np.all(np.isfinite(out)) and float(jnp.std(out)) > 1e-3
  params = variables['params']
  # Styles start as identity modulation and noise starts switched off, as in the paper.
  np.testing.assert_array_equal(params['block1']['conv0']['conv']['affine']['bias'], 1.0)
  assert float(params['block1']['conv0']['noise_strength']) == 0.0
  # Equalised lr: weights are stored ~N(0, 1) and scaled at run time.
  assert 0.8 < float(jnp.std(params['block1']['conv1']['conv']['kernel'])) < 1.2


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  module = models.get('small_cnn', width=4, dtype=jnp.bfloat16)
  x = jnp.ones((B, 28, 28, 1))
  variables = fast_init(module, x, train=False)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables['params'])} == {jnp.dtype('float32')}
  assert jitted(module, train=False)(variables, x).dtype == jnp.float32


def test_batchnorm_train_vs_eval():
  module = models.get('resnet20', width=4, num_classes=3)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1)) * 3 + 2
  variables = fast_init(module, x, train=False)
  with pytest.raises(Exception, match='batch_stats'):  # train mode must be allowed to update them
    jax.eval_shape(lambda: module.apply(variables, x, train=True))
  eval_out, eval_state = jitted(module, train=False, mutable=['batch_stats'])(variables, x)
  train_out, train_state = jitted(module, train=True, mutable=['batch_stats'])(variables, x)
  # Batch statistics of this input differ from the initial running averages (mean 0, var 1).
  assert not np.allclose(train_out, eval_out, atol=1e-3)
  old = variables['batch_stats']['stem']['bn']['mean']
  assert not np.allclose(train_state['batch_stats']['stem']['bn']['mean'], old)
  np.testing.assert_array_equal(eval_state['batch_stats']['stem']['bn']['mean'], old)


def test_penultimate_features_layer():
  module = models.get('small_cnn', width=4)
  x = jnp.ones((B, 32, 32, 3))
  _, state = jax.eval_shape(lambda: module.init_with_output(
      jax.random.key(0), x, train=False, capture_intermediates=lambda m, _: m.name == 'features'))
  assert state['intermediates']['features']['__call__'][0].shape == (B, 16)


@pytest.mark.parametrize('name', ['dcgan_generator', 'stylegan2_generator'])
def test_generator_class_conditioning(name):
  module = _build(name, 8, 1, num_classes=3)
  z = jax.random.normal(jax.random.key(0), (B, module.latent_dim))
  # Initialised WITHOUT labels, then called with them: the embedding table must exist.
  variables = fast_init(module, z, None, train=False)
  params = variables['params'] if name == 'dcgan_generator' else variables['params']['mapping']
  assert params['embed']['embedding'].shape[0] == 3
  gen = jitted(module, train=False)
  a, b = gen(variables, z, jnp.array([0, 0])), gen(variables, z, jnp.array([1, 2]))
  assert np.abs(a - b).max() > 1e-3
  assert gen(variables, z, None).shape == a.shape


@pytest.mark.parametrize('name', ['dcgan_discriminator', 'stylegan2_discriminator'])
def test_discriminator_projection_conditioning(name):
  module = _build(name, 32, 3, num_classes=4)
  x = jax.random.uniform(jax.random.key(0), (B, 32, 32, 3), minval=-1, maxval=1)
  variables = fast_init(module, x, None, train=False)
  assert variables['params']['embed']['embedding'].shape[0] == 4
  disc = jitted(module, train=False)
  y1, y2 = disc(variables, x, jnp.array([0, 1])), disc(variables, x, jnp.array([3, 2]))
  assert y1.shape == (B,)
  assert not np.allclose(y1, y2)


def test_dcgan_discriminator_logits_are_per_example():
  # R1 needs per-example logits: changing example 1 must not move example 0's logit.
  module = _build('dcgan_discriminator', 28, 1, norm='layer')
  x = jax.random.uniform(jax.random.key(0), (B, 28, 28, 1))
  variables = fast_init(module, x, train=False)
  assert 'batch_stats' not in variables
  disc = jitted(module, train=True)
  y, y2 = disc(variables, x), disc(variables, x.at[1].set(-x[1]))
  np.testing.assert_allclose(y[0], y2[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(y[1], y2[1])


def test_dcgan_conv_transpose_variant_matches_shapes():
  module = _build('dcgan_generator', 32, 3, upsample='conv_transpose')
  z = jnp.ones((B, module.latent_dim))
  out = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), z, train=False)[0])
  assert out.shape == (B, 32, 32, 3)


def test_autoencoder_vector_latent_and_bad_size():
  module = models.get('conv_autoencoder', width=4, latent='vector', latent_dim=7)
  x = jnp.ones((B, 28, 28, 1))
  out, state = jax.eval_shape(lambda: module.init_with_output(
      jax.random.key(0), x, train=False, capture_intermediates=True))
  assert out.shape == x.shape
  assert state['intermediates']['latent']['__call__'][0].shape == (B, 7)
  with pytest.raises(errors.ConfigError, match='num_downsamples'):
    jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.ones((B, 30, 30, 1)), train=False))


def test_generator_rejects_wrong_latent_size():
  module = _build('dcgan_generator', 28, 1)
  with pytest.raises(errors.ConfigError, match='latent_dim=8'):
    jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.ones((B, 5)), train=False))


class TestStyleGAN2Noise:
  """Same 'noise' key → same images (even across widths), different → different, none → zeros."""

  @staticmethod
  def _noisy(variables, only=None):
    """noise_strength starts at 0 (as in the paper): set it to 1 so noise matters; zero the
    other parameters whose path contains `only`."""
    def edit(path, v):
      name = jax.tree_util.keystr(path)
      if 'noise_strength' in name:
        return jnp.ones_like(v)
      return jnp.zeros_like(v) if only and only in name else v
    return jax.tree_util.tree_map_with_path(edit, variables)

  @pytest.fixture(scope='class')
  @classmethod
  def gen(cls):
    module = _build('stylegan2_generator', 8, 1)
    z = jax.random.normal(jax.random.key(0), (B, module.latent_dim))
    return module, cls._noisy(fast_init(module, z, train=False)), z

  def test_same_key_same_output_different_key_or_none_different(self, gen):
    module, variables, z = gen
    sample = jax.jit(lambda k, mode: module.apply(variables, z, rngs={'noise': k},
                                                  noise_mode=mode), static_argnums=1)
    a, b = sample(jax.random.key(1), 'auto'), sample(jax.random.key(1), 'auto')
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, sample(jax.random.key(2), 'auto'))
    # Without a 'noise' rng the noise is zero: deterministic, and equal to noise_mode='none'.
    no_rng = jax.jit(lambda: module.apply(variables, z))()
    np.testing.assert_allclose(no_rng, sample(jax.random.key(1), 'none'), rtol=1e-6, atol=1e-6)
    assert not np.allclose(no_rng, a)

  def test_random_mode_requires_a_key(self, gen):
    module, variables, z = gen
    with pytest.raises(errors.ConfigError, match="rngs=\\{'noise': key\\}"):
      jax.eval_shape(lambda: module.apply(variables, z, noise_mode='random'))

  def test_teacher_and_student_draw_the_same_noise(self):
    from kd_jax.models import features  # pylint: disable=import-outside-toplevel

    def noise_map(width):
      """The noise block0/conv1 adds: with its weights and bias zeroed and strength 1, the
      layer's output is lrelu(noise)·√2 in every channel, which we invert."""
      module = _build('stylegan2_generator', 16, 1, width=width)
      z = jnp.ones((B, module.latent_dim))
      variables = self._noisy(fast_init(module, z, train=False),
                              only="['block0']['conv1']")
      y = jax.jit(lambda v: features.apply_with_features(
          module, v, z, ['block0/conv1'], train=False,
          rngs={'noise': jax.random.key(3)})[1]['block0/conv1'])(variables)
      assert y.shape[-1] == 4 * width
      np.testing.assert_allclose(y[..., 0], y[..., -1])  # one noise map for all channels
      y = np.asarray(y[..., 0]) / np.sqrt(2)
      return np.where(y > 0, y, y / 0.2)

    teacher, student = noise_map(8), noise_map(2)
    np.testing.assert_allclose(teacher, student, rtol=1e-5, atol=1e-6)
    assert 0.5 < np.std(teacher) < 2.0  # a unit Gaussian, not zeros
