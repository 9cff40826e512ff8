"""Host-side evaluation of image generators: samples, grids, FID/KID/PR, PSNR/SSIM, cost.

Evaluation runs on host copies of the (replicated) variables with local jit, identically on every
process, so no cross-process collective is needed; only process 0's writer writes. Every image
quality number is reported with its sample count and feature extractor. Functions take plain values;
the trainers pass their config fields in.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import config_utils, errors, imports, parallel, report, teacher as teacher_lib
from kd_jax.metrics import cost, image as image_metrics
from kd_jax.models import features as features_lib
from kd_jax.trainers import gan_parts
from kd_jax.types import Array, PyTree

FeatureFn = Callable[[Array], Array]
SampleFn = Callable[[np.ndarray, np.ndarray | None], Array]


CLASSIFIER_FIELD = 'config.eval.classifier_checkpoint'


def center_crop(images: Array, size: int) -> Array:
  """The central size × size of NHWC images (size 0: unchanged)."""
  if not size:
    return images
  h, w = images.shape[1:3]
  top, left = (h - size) // 2, (w - size) // 2
  return images[:, top:top + size, left:left + size]


def _cropped_shape(image_shape: Sequence[int], crop: int) -> tuple[int, ...]:
  if crop and not 0 < crop <= min(image_shape[:2]):
    raise errors.ConfigError(f'config.eval.feature_crop={crop} must lie in 1..{min(image_shape[:2])} '
                             f'(the images are {image_shape[0]}×{image_shape[1]}), or be 0.')
  return (crop, crop, *image_shape[2:]) if crop else tuple(image_shape)


def load_feature_net(checkpoint: str, layer: str, image_shape: Sequence[int], crop: int = 0
                     ) -> tuple[FeatureFn, str]:
  """A trained classifier's features at `layer` as an images→[B, D] function, and its name.

  crop > 0: images are centre-cropped to crop × crop first (a classifier trained at 28 px scoring
  generators that make 32 px from padded data)."""
  example = jnp.zeros((1, *_cropped_shape(image_shape, crop)), jnp.float32)
  net = teacher_lib.restore_teacher(checkpoint, {}, role='model', init_args=(example,),
                                    init_kwargs={'train': False}, field='config.eval.classifier',
                                    checkpoint_field=CLASSIFIER_FIELD)
  # (Its kind and `layer` were checked before training: `check_classifier`.)
  variables = jax.device_get(net.variables)

  def fn(images: Array) -> Array:
    _, feats, _ = features_lib.apply_with_features(net.module, variables, center_crop(images, crop),
                                                   [layer], train=False)
    f = feats[layer]
    # Spatial maps are average-pooled, the usual reduction for feature-space metrics.
    return f.reshape(f.shape[0], -1, f.shape[-1]).mean(axis=1) if f.ndim == 4 else f

  name = f"{net.model_config.get('name')}@{layer} ({checkpoint})"
  return fn, name + (f', centre {crop}×{crop}' if crop else '')


def check_classifier(checkpoint: str, layer: str, image_shape: Sequence[int], crop: int = 0
                     ) -> None:
  """Fails before training when `config.eval.classifier_checkpoint` (restored only at the end of the
  run) is not a classifier run, or `config.eval.feature_layer` is not one of its layers."""
  meta = teacher_lib.check_exports(checkpoint, 'model', CLASSIFIER_FIELD)
  module = config_utils.build_model(meta['exported']['model'], f'{CLASSIFIER_FIELD} (saved model)')
  example = jnp.zeros((1, *_cropped_shape(image_shape, crop)), jnp.float32)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), example, train=False))
  with config_utils.field_context('config.eval.feature_layer'):
    jax.eval_shape(lambda v: features_lib.apply_with_features(module, v, example, [layer],
                                                              train=False), variables)


def feature_extractor(feature_fn: str, classifier_checkpoint: str, layer: str, crop: int,
                      image_shape: Sequence[int]) -> tuple[FeatureFn, str] | None:
  """The images→[B, D] function of the feature-space metrics and its name; None when neither is set.

  `feature_fn = 'package.module:function'` (e.g. an Inception-v3 pool3 function of your own, since
  its weights cannot be fetched here) takes images [B, H, W, C] float32 in [-1, 1] and returns
  [B, D]; it wins over `classifier_checkpoint` (a trained classifier's features at `layer`, on the
  central crop × crop when crop > 0).
  """
  if feature_fn:
    return check_feature_fn(feature_fn), f'user feature_fn {feature_fn}'
  if classifier_checkpoint:
    return load_feature_net(classifier_checkpoint, layer, image_shape, crop)
  return None


def check_feature_fn(spec: str) -> FeatureFn | None:
  """Imports `config.eval.feature_fn` ('package.module:function'); None when it is not set."""
  if not spec:
    return None
  with config_utils.field_context('config.eval.feature_fn'):
    fn = imports.resolve(spec)
    if not callable(fn):
      raise errors.ConfigError(f'{spec!r} is not callable; name a function images [B,H,W,C] in '
                               '[-1,1] -> features [B,D].')
  return fn


def sample_images(sample_fn: SampleFn, z: np.ndarray, y: np.ndarray | None, batch: int
                  ) -> np.ndarray:
  """`sample_fn` over `z` (and labels `y`) in chunks of `batch`, concatenated on host."""
  return np.concatenate([np.asarray(sample_fn(z[s:s + batch], None if y is None else y[s:s + batch]))
                         for s in range(0, len(z), batch)])


def latents(seed: int, n: int, latent_dim: int, num_classes: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
  """Fixed evaluation latents (and uniform class labels for a conditional generator)."""
  key = jax.random.key(seed)
  z = np.asarray(gan_parts.sample_latents(key, n, latent_dim))
  y = (np.asarray(gan_parts.sample_labels(jax.random.fold_in(key, 1), n, num_classes))
       if num_classes else None)
  return z, y


def generator_quality(sample_fn: SampleFn, extractor: tuple[FeatureFn, str], source: Any, *,
                      num_samples: int, batch: int, seed: int, latent_dim: int,
                      num_classes: int) -> dict[str, Any]:
  """FID/KID/PR/diversity of `num_samples` samples vs as many real training images."""
  feat_fn, name = extractor
  z, y = latents(seed + 1, num_samples, latent_dim, num_classes)
  fake = image_metrics.extract_features(feat_fn, sample_images(sample_fn, z, y, batch), batch)
  real = image_metrics.extract_features(feat_fn, real_images(source, num_samples), batch)
  return image_metrics.ImageQualityReport.from_features(fake, real, name, seed=seed).to_dict()


def pair_report(student: np.ndarray, reference: np.ndarray, prefix: str) -> dict[str, float]:
  """Mean PSNR/SSIM (dB / unitless) of student images against references in [-1, 1]."""
  return {f'{prefix}psnr': float(np.mean(image_metrics.psnr(student, reference))),
          f'{prefix}ssim': float(np.mean(image_metrics.ssim(student, reference)))}


def cost_report(apply_fn: Callable[..., Array], variables: PyTree, *example: Array,
                batch: int = 256) -> dict[str, float]:
  """Params, FLOPs per example (XLA cost analysis, batch-1 forward) and items/s at `batch`."""
  one = [e[:1] for e in example]
  big = [jnp.repeat(e[:1], batch, axis=0) for e in example]
  return {'params': int(cost.param_count(variables['params'])),
          'flops_per_example': float(cost.flops(apply_fn, variables, *one)),
          'images_per_sec': float(cost.throughput(apply_fn, variables, *big, n_iters=5, warmup=1)
                                  * batch)}


def write_grid(workdir: str, name: str, step: int, rows: Sequence[tuple[str, np.ndarray]],
               writer: Any, ncols: int = 16) -> str:
  """Labelled side-by-side grid → `<workdir>/images/<name>_<step>.png` and TensorBoard (chief)."""
  grid = report.side_by_side(rows, ncols=ncols)
  path = os.path.join(workdir, 'images', f'{name}_{step:06d}.png')
  if parallel.is_chief():
    report.save_png(path, grid)
    img = grid if grid.ndim == 3 else grid[..., None]
    writer.write_images(step, {f'images/{name}': img[None]})
  return path


def real_images(source: Any, n: int) -> np.ndarray:
  """The first `n` images of a data source, normalised to [-1, 1] (float32, NHWC)."""
  n = min(n, len(source))
  imgs = np.stack([np.asarray(source[i]['image']) for i in range(n)])
  return imgs.astype(np.float32) / 127.5 - 1.0


def module_apply(module: nn.Module) -> Callable[..., Array]:
  return lambda v, *a: module.apply(v, *a, train=False)


def interleave_rows(named: Sequence[tuple[str, np.ndarray]], ncols: int
                    ) -> list[tuple[str, np.ndarray]]:
  """Rows of `ncols` images alternating between the named sets (teacher row, student row, ...),
  so the same latent sits directly above/below its counterpart."""
  n = min(len(images) for _, images in named)
  rows = []
  for start in range(0, n, ncols):
    rows.extend((name, images[start:start + ncols]) for name, images in named)
  return rows
