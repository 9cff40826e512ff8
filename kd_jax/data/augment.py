"""On-device image preprocessing: pure jnp functions on batches [B, H, W, C], safe under jit/vmap.

The input pipeline hands over uint8 batches; trainers call these inside the jitted step with a key
derived as `fold_in(data_key, step)`, so augmentation is reproducible and costs no host time.
"""
import dm_pix as pix
import jax
import jax.numpy as jnp

from kd_jax.types import Array


def normalize(images: Array) -> Array:
  """Maps uint8 pixels [0, 255] to float32 [-1, 1]: x / 127.5 - 1 (the range tanh generators emit)."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def random_crop_flip(rng: Array, images: Array, *, pad: int = 4, flip: bool = True) -> Array:
  """Standard CIFAR / Fashion-MNIST augmentation, drawn independently per example.

  Zero-pads each image by `pad` pixels on every side, crops a random window of the original size
  and, if `flip`, mirrors it left-right with probability 1/2. Apply it before `normalize` so the
  padding is black, as in the usual recipe (He et al. 2016, "Deep Residual Learning", sec. 4.2).

  Args:
    rng: JAX PRNG key.
    images: [B, H, W, C], any dtype.
    pad: border width in pixels (typically 4 for CIFAR-10 32x32, 2 for 28x28 images); 0 disables
      cropping.
    flip: whether to randomly mirror left-right.

  Returns:
    Array with the shape and dtype of `images`.
  """
  if pad < 0:
    raise ValueError(f'pad must be >= 0, got {pad}')
  crop_keys, flip_keys = jnp.split(jax.random.split(rng, 2 * images.shape[0]), 2)
  return jax.vmap(lambda x, kc, kf: _crop_flip_one(x, kc, kf, pad, flip))(images, crop_keys,
                                                                          flip_keys)


def _crop_flip_one(image: Array, crop_key: Array, flip_key: Array, pad: int, flip: bool) -> Array:
  height, width, channels = image.shape
  if pad:
    image = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    image = pix.random_crop(crop_key, image, (height, width, channels))
  if flip:
    image = pix.random_flip_left_right(flip_key, image)
  return image


def example_crop_flip(rng: Array, images: Array, ids: Array, *, pad: int = 4,
                      flip: bool = True) -> Array:
  """`random_crop_flip` with each example's window and flip fixed by its integer id ([B]).

  The same (rng, id) gives the same augmented image in any batch, at any step: what a
  teacher-output cache needs (`kd_jax.distill.cache`: id = example index · copies + copy).
  """
  if pad < 0:
    raise ValueError(f'pad must be >= 0, got {pad}')

  def one(image: Array, i: Array) -> Array:
    kc, kf = jax.random.split(jax.random.fold_in(rng, i))
    return _crop_flip_one(image, kc, kf, pad, flip)
  return jax.vmap(one)(images, ids)


def mixup(rng: Array, images: Array, alpha: float) -> tuple[Array, Array]:
  """Mixes each example with its neighbour in the batch: x~_i = lam_i x_i + (1 - lam_i) x_{i-1}.

  lam_i ~ Beta(alpha, alpha), one per example; the partner of example i is example i-1 (cyclic,
  `jnp.roll(x, 1, axis=0)`). Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization". For
  distillation the teacher labels the mixed images itself, as in function matching (Beyer et al.
  2022, "Knowledge distillation: A good teacher is patient and consistent"); to mix labels or other
  per-example arrays the same way, use `mix(y, lam)`.

  Args:
    rng: JAX PRNG key.
    images: [B, ...]; integer images are converted to float32 first.
    alpha: Beta concentration (> 0); small alpha keeps most lam near 0 or 1.

  Returns:
    (mixed images float [B, ...], lam float32 [B]).
  """
  if alpha <= 0:
    raise ValueError(f'alpha must be > 0, got {alpha}')
  if not jnp.issubdtype(images.dtype, jnp.floating):
    images = jnp.asarray(images, jnp.float32)
  lam = jax.random.beta(rng, alpha, alpha, (images.shape[0],), jnp.float32)
  return mix(images, lam), lam


def mix(x: Array, lam: Array) -> Array:
  """Applies mixup weights `lam` [B] to any per-example array x [B, ...] (images, one-hot labels)."""
  lam = jnp.reshape(lam, lam.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
  return lam * x + (1 - lam) * jnp.roll(x, 1, axis=0)
