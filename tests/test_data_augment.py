"""kd_jax.data.augment: on-device normalisation, crop/flip and mixup."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.data import augment

# Jitted once per module, so tests with the same shapes share one compilation.
crop_flip = jax.jit(augment.random_crop_flip, static_argnames=('pad', 'flip'))
mixup = jax.jit(augment.mixup, static_argnums=2)


def images(batch=6, size=8, channels=1):
  """Distinct, asymmetric images (values 1..255, so zero padding is recognisable)."""
  x = np.arange(batch * size * size * channels).reshape(batch, size, size, channels) % 255 + 1
  return jnp.asarray(x, jnp.uint8)


def test_normalize_maps_uint8_range_to_minus_one_one():
  out = augment.normalize(jnp.array([0, 255, 51], jnp.uint8))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, [-1.0, 1.0, 51 / 127.5 - 1], rtol=1e-6)


def _windows(image, pad):
  """All crops of the zero-padded image, and their mirror images."""
  size = image.shape[0]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  crops = [padded[i:i + size, j:j + size] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
  return crops + [c[:, ::-1] for c in crops]


def test_crop_flip_outputs_are_padded_windows_drawn_per_example():
  x = images()
  out = crop_flip(jax.random.key(0), x, pad=2)
  assert out.shape == x.shape and out.dtype == x.dtype
  for original, augmented in zip(np.asarray(x), np.asarray(out)):
    assert any(np.array_equal(augmented, w) for w in _windows(original, 2))
  # Per example: identical inputs get different crops/flips.
  same = jnp.broadcast_to(x[:1], x.shape)
  out_same = np.asarray(crop_flip(jax.random.key(1), same, pad=2))
  assert len({o.tobytes() for o in out_same}) > 1


def test_crop_flip_is_deterministic_and_can_be_disabled():
  x = images()
  key = jax.random.key(3)
  np.testing.assert_array_equal(crop_flip(key, x, pad=2), crop_flip(key, x, pad=2))
  np.testing.assert_array_equal(crop_flip(key, x, pad=0, flip=False), x)
  flipped = np.asarray(crop_flip(key, x, pad=0, flip=True))
  for original, out in zip(np.asarray(x), flipped):
    assert np.array_equal(out, original) or np.array_equal(out, original[:, ::-1])


def test_mixup_mixes_each_example_with_its_neighbour():
  x = augment.normalize(images())
  mixed, lam = mixup(jax.random.key(0), x, 0.4)
  x, mixed, lam = np.asarray(x), np.asarray(mixed), np.asarray(lam)
  assert mixed.shape == x.shape and lam.shape == (x.shape[0],)
  assert np.all((lam >= 0) & (lam <= 1)) and np.ptp(lam) > 0
  w = lam[:, None, None, None]
  np.testing.assert_allclose(mixed, w * x + (1 - w) * np.roll(x, 1, 0), rtol=1e-6, atol=1e-6)
  mixed_labels = np.asarray(augment.mix(jnp.eye(6), jnp.asarray(lam)))
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(mixed_labels[2, [1, 2]], [1 - lam[2], lam[2]], rtol=1e-6)


def test_mixup_converts_integer_images_and_rejects_bad_alpha():
  mixed, _ = jax.eval_shape(lambda r, x: augment.mixup(r, x, 1.0), jax.random.key(0), images())
  assert mixed.dtype == jnp.float32
  with pytest.raises(ValueError, match='alpha'):
    augment.mixup(jax.random.key(0), images(), 0.0)
