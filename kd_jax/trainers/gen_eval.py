"""Host-side evaluation of image generators: samples, grids, FID/KID/PR, PSNR/SSIM, cost.

Evaluation runs on host copies of the (replicated) variables with local jit, identically on every
process, so no cross-process collective is needed; only process 0's writer writes. Every image
quality number is reported with its sample count and feature extractor.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import errors, parallel, report, teacher as teacher_lib
from kd_jax.metrics import cost, image as image_metrics
from kd_jax.models import features as features_lib
from kd_jax.types import Array, PyTree

FeatureFn = Callable[[Array], Array]


def load_feature_net(checkpoint: str, layer: str, image_shape: Sequence[int],
                     field: str = 'config.eval.classifier_checkpoint') -> tuple[FeatureFn, str]:
  """A trained classifier's features at `layer` as a jitted images→[B, D] function, and its name."""
  if not checkpoint:
    raise errors.ConfigError(f'{field} is empty; FID/KID/precision/recall need a trained classifier '
                             'run (e.g. the Fashion-MNIST teacher workdir).')
  example = jnp.zeros((1, *image_shape), jnp.float32)
  net = teacher_lib.restore_teacher(checkpoint, {}, role='model', init_args=(example,),
                                    init_kwargs={'train': False}, field=field.rsplit('.', 1)[0])
  variables = jax.device_get(net.variables)

  @jax.jit
  def fn(images: Array) -> Array:
    _, feats, _ = features_lib.apply_with_features(net.module, variables, images, [layer],
                                                   train=False)
    f = feats[layer]
    f = f[0] if isinstance(f, (tuple, list)) else f
    # Spatial maps are average-pooled, the usual reduction for feature-space metrics.
    return f.reshape(f.shape[0], -1, f.shape[-1]).mean(axis=1) if f.ndim == 4 else f

  name = f"{net.model_config.get('name')}@{layer} ({checkpoint})"
  return fn, name


def has_feature_extractor(eval_cfg: Any) -> bool:
  """Whether FID/KID/precision/recall can be computed: a classifier run or a user function is set."""
  return bool(eval_cfg.get('feature_fn') or eval_cfg.get('classifier_checkpoint'))


def feature_extractor(eval_cfg: Any, image_shape: Sequence[int]) -> tuple[FeatureFn, str]:
  """The images→[B, D] function of the feature-space metrics, and the name the reports give it.

  `config.eval.feature_fn = 'package.module:function'` (e.g. an Inception-v3 pool3 function of your
  own, since its weights cannot be fetched here) takes images [B, H, W, C] float32 in [-1, 1] and
  returns [B, D]; it wins over `config.eval.classifier_checkpoint` (a trained classifier's features
  at `config.eval.feature_layer`).
  """
  spec = eval_cfg.get('feature_fn') or ''
  if not spec:
    return load_feature_net(eval_cfg.classifier_checkpoint, eval_cfg.feature_layer, image_shape)
  return check_feature_fn(eval_cfg), f'user feature_fn {spec}'


def check_feature_fn(eval_cfg: Any) -> FeatureFn | None:
  """Imports `config.eval.feature_fn` ('package.module:function'); None when it is not set."""
  spec = eval_cfg.get('feature_fn') or ''
  if not spec:
    return None
  import importlib  # pylint: disable=import-outside-toplevel
  module_name, _, attr = spec.partition(':')
  try:
    fn = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError, ValueError) as e:
    raise errors.ConfigError(
        f'config.eval.feature_fn={spec!r} cannot be imported ({type(e).__name__}: {e}); give '
        "'package.module:function' for a function images [B,H,W,C] in [-1,1] -> features [B,D], "
        'importable from the working directory.') from None
  if not callable(fn):
    raise errors.ConfigError(f'config.eval.feature_fn={spec!r} is not callable; name a function.')
  return fn


def batched(fn: Callable[..., Array], n: int, batch: int, *args_fn: Callable[[int, int], Any]
            ) -> np.ndarray:
  """Calls `fn(*[a(start, size) for a in args_fn])` over chunks and concatenates on host."""
  out = []
  for start in range(0, n, batch):
    size = min(batch, n - start)
    out.append(np.asarray(fn(*[a(start, size) for a in args_fn]))[:size])
  return np.concatenate(out)


def quality_report(fake_feats: np.ndarray, real_feats: np.ndarray, extractor: str, *,
                   seed: int) -> dict[str, Any]:
  """FID, KID, precision/recall and diversity, with the sample counts and the extractor named."""
  kid_mean, kid_std = image_metrics.kid(fake_feats, real_feats, seed=seed)
  precision, recall = image_metrics.precision_recall(real_feats, fake_feats)
  return {'fid': float(image_metrics.fid(fake_feats, real_feats)),
          'kid': float(kid_mean), 'kid_std': float(kid_std),
          'precision': float(precision), 'recall': float(recall),
          'diversity': float(image_metrics.diversity(fake_feats[:2000])),
          'num_samples': int(fake_feats.shape[0]), 'num_real': int(real_feats.shape[0]),
          'feature_extractor': extractor}


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


def labels_of(source: Any, n: int) -> np.ndarray:
  return np.asarray([int(source[i]['label']) for i in range(min(n, len(source)))], np.int32)



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
