"""Image-quality metrics for generators: FID, KID, precision/recall, diversity, PSNR and SSIM.

Feature-space metrics (FID, KID, precision/recall, diversity) take features from a
`FeatureExtractor` and are computed on host in float64 NumPy/SciPy; their values depend on the
extractor and the sample count, so every reported number must name both (`ImageQualityReport`
carries them). Pixel metrics (PSNR, SSIM) use dm-pix on images mapped to [0, 1].
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Protocol

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.spatial import distance

from kd_jax.types import Array

# Rows per block in pairwise-distance passes: a 1000 x 10000 float64 block is 80 MB, so 10k x 10k
# comparisons stay well within host memory.
_BLOCK_ROWS = 1000


class FeatureExtractor(Protocol):
  """Maps images [B, H, W, C] in [-1, 1] to features [B, D] (e.g. a classifier's penultimate layer).

  Must be jit-compatible and treat examples independently (batches are padded to a fixed size).
  """

  def __call__(self, images: Array) -> Array:
    ...


def extract_features(fn: FeatureExtractor, images: Array | np.ndarray | Iterable[Any],
                     batch_size: int = 256) -> np.ndarray:
  """Runs `fn` (jitted) over `images` in batches and concatenates the features on host.

  Args:
    fn: the feature extractor.
    images: one array [N, H, W, C], or an iterable of such arrays (e.g. generator outputs).
    batch_size: examples per call. The last batch is zero-padded to this size so `fn` compiles
      once, and the padding rows are dropped.

  Returns:
    float32 [N, D] NumPy array.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  jitted = jax.jit(fn)
  chunks = [images] if isinstance(images, (np.ndarray, jax.Array)) else images
  out = []
  for chunk in chunks:
    chunk = np.asarray(chunk, np.float32)
    for start in range(0, chunk.shape[0], batch_size):
      batch = chunk[start:start + batch_size]
      n = batch.shape[0]
      if n < batch_size:
        batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
      out.append(np.asarray(jitted(batch), np.float32)[:n])
  if not out:
    raise ValueError('extract_features got no images.')
  return np.concatenate(out)


def _as_features(x: Any, name: str, min_rows: int = 2) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < min_rows:
    raise ValueError(f'{name} must be [N, D] features with N >= {min_rows}; got shape {x.shape}.')
  return x


# ---------------------------------------------------------------------------------------- FID


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and covariance [D, D] (unbiased, `np.cov(rowvar=False)`) of features [N, D]."""
  f = _as_features(features, 'features')
  return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
  """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

      d² = ||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)

  The FID of Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
  Nash Equilibrium", when the Gaussians are fitted to extractor features of real/generated images.

  The matrix square root is `scipy.linalg.sqrtm`. When the product is singular (e.g. fewer
  samples than feature dimensions) and the root is not finite, `eps` is added to both diagonals
  and the root recomputed. Round-off can give the root tiny imaginary parts; they are dropped
  (with a warning if they are not tiny, since the result is then less reliable).

  Example: `frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))` is 2.0.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f'Mismatched statistics: mu {mu1.shape} vs {mu2.shape}, '
                     f'sigma {sigma1.shape} vs {sigma2.shape}.')
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    logging.warning('FID: sigma1 @ sigma2 is singular; adding %g to the covariance diagonals.', eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    largest = np.max(np.abs(np.diagonal(covmean).imag))
    if largest > 1e-3:
      logging.warning('FID: dropping an imaginary component of %g from sqrtm; the value is '
                      'unreliable (too few samples for the feature dimension?).', largest)
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(features_a: Any, features_b: Any) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D].

  Biased upward at small N (it is a plug-in estimate); compare FIDs only at equal sample counts
  and with the same feature extractor.
  """
  return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


# ---------------------------------------------------------------------------------------- KID


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  d = x.shape[1]
  m = x.shape[0]
  k_xx = (x @ x.T / d + 1.0) ** 3
  k_yy = (y @ y.T / d + 1.0) ** 3
  k_xy = (x @ y.T / d + 1.0) ** 3
  # The unbiased U-statistic leaves out the k(x_i, x_i) terms.
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.mean())


def kid(features_a: Any, features_b: Any, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: unbiased MMD² with a cubic polynomial kernel, over random subsets.

      k(x, y) = (x·y / d + 1)³
      MMD² = 1/(m(m-1)) Σ_{i≠j} [k(x_i,x_j) + k(y_i,y_j)] − 2/m² Σ_{i,j} k(x_i,y_j)

  Bińkowski et al. 2018, "Demystifying MMD GANs". Each of `num_subsets` draws `m` rows without
  replacement from each set, m = min(subset_size, N_a, N_b) (so small sample counts still work;
  report the count). Unbiased, so it can be slightly negative when the sets match.

  Returns:
    (mean, std) of MMD² over the subsets.
  """
  a = _as_features(features_a, 'features_a')
  b = _as_features(features_b, 'features_b')
  if a.shape[1] != b.shape[1]:
    raise ValueError(f'Feature dimensions differ: {a.shape[1]} vs {b.shape[1]}.')
  if num_subsets < 1:
    raise ValueError(f'num_subsets must be >= 1, got {num_subsets}.')
  m = min(subset_size, a.shape[0], b.shape[0])
  if m < 2:
    raise ValueError(f'subset_size must be >= 2, got {subset_size}.')
  rng = np.random.default_rng(seed)
  values = np.array([
      _polynomial_mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)],
                                b[rng.choice(b.shape[0], m, replace=False)])
      for _ in range(num_subsets)])
  return float(values.mean()), float(values.std())


# -------------------------------------------------------------------------- precision / recall


def _kth_neighbour_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
  """Squared distance from each row of x to its k-th nearest other row, in row blocks."""
  radii = np.empty(x.shape[0])
  for start in range(0, x.shape[0], _BLOCK_ROWS):
    block = distance.cdist(x[start:start + _BLOCK_ROWS], x, 'sqeuclidean')
    # Index 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is at k.
    radii[start:start + _BLOCK_ROWS] = np.partition(block, k, axis=1)[:, k]
  return radii


def precision_recall(real_feats: Any, fake_feats: Any, *, k: int = 3) -> tuple[float, float]:
  """Improved precision and recall of generated features against real ones.

  Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative
  Models": each set's manifold is the union of balls around its points with radius the distance
  to the point's k-th nearest neighbour in the same set.
      precision = fraction of fake points inside the real manifold (fidelity)
      recall    = fraction of real points inside the fake manifold (coverage)
  Distances are computed exactly (scipy `cdist`) in blocks of rows, so 10k x 10k fits in memory.

  Returns:
    (precision, recall), each in [0, 1].
  """
  real = _as_features(real_feats, 'real_feats', min_rows=k + 1)
  fake = _as_features(fake_feats, 'fake_feats', min_rows=k + 1)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f'Feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}.')
  if k < 1:
    raise ValueError(f'k must be >= 1, got {k}.')
  real_radii = _kth_neighbour_sq_radii(real, k)
  fake_radii = _kth_neighbour_sq_radii(fake, k)
  fake_in_real = np.zeros(fake.shape[0], bool)
  real_in_fake = np.zeros(real.shape[0], bool)
  # One pass over fake x real distances serves both directions.
  for start in range(0, fake.shape[0], _BLOCK_ROWS):
    block = distance.cdist(fake[start:start + _BLOCK_ROWS], real, 'sqeuclidean')
    fake_in_real[start:start + _BLOCK_ROWS] = (block <= real_radii[None, :]).any(axis=1)
    real_in_fake |= (block <= fake_radii[start:start + _BLOCK_ROWS, None]).any(axis=0)
  return float(fake_in_real.mean()), float(real_in_fake.mean())


# ----------------------------------------------------------------------------------- diversity


def diversity(features: Any) -> float:
  """Mean pairwise L2 distance between feature vectors, over pairs i ≠ j.

  A simple mode-collapse signal: identical samples give 0. Cost is O(N²·D); pass a subset
  (a few thousand rows) for large N.
  """
  f = _as_features(features, 'features')
  n = f.shape[0]
  total = 0.0
  for start in range(0, n, _BLOCK_ROWS):
    # The diagonal (i == j) contributes 0 to the sum; dividing by n(n-1) excludes it from the mean.
    total += distance.cdist(f[start:start + _BLOCK_ROWS], f, 'euclidean').sum()
  return float(total / (n * (n - 1)))


# ------------------------------------------------------------------------------- PSNR / SSIM


def _to_unit_range(x: Any, max_val: float, min_val: float) -> Array:
  if not max_val > min_val:
    raise ValueError(f'max_val ({max_val}) must exceed min_val ({min_val}).')
  x = jnp.asarray(x, jnp.float32)
  # Clipped like a saved image: the peak signal is defined by the range, so out-of-range pixels
  # (e.g. an unbounded decoder output) would otherwise inflate or distort the score.
  return jnp.clip((x - min_val) / (max_val - min_val), 0.0, 1.0)


def psnr(a: Any, b: Any, max_val: float = 1.0, min_val: float = -1.0) -> Array:
  """Peak signal-to-noise ratio in dB per image, via `dm_pix.psnr`.

      PSNR = −10 log10(MSE(a', b')),  a' = clip((a − min_val) / (max_val − min_val), 0, 1)

  Images default to kd_jax's [-1, 1] range; they are mapped to [0, 1] (peak 1) first, so the
  value equals the usual PSNR on [0, 1] or [0, 255] images. Identical images give +inf (no cap).

  Args:
    a, b: [B, H, W, C] or [H, W, C] images, same shape.
    max_val, min_val: the images' value range.

  Returns:
    [B] (or scalar for a single image) float32.
  """
  return dm_pix.psnr(_to_unit_range(a, max_val, min_val), _to_unit_range(b, max_val, min_val))


def ssim(a: Any, b: Any, max_val: float = 1.0, min_val: float = -1.0) -> Array:
  """Structural similarity per image (Wang et al. 2004), via `dm_pix.ssim` with its defaults.

  Images are mapped from [min_val, max_val] to [0, 1] like `psnr`, then scored with an 11x11
  Gaussian window (sigma 1.5), k1=0.01, k2=0.03; H and W must be >= 11. Identical images give 1.

  Returns:
    [B] (or scalar for a single image) float32.
  """
  return dm_pix.ssim(_to_unit_range(a, max_val, min_val), _to_unit_range(b, max_val, min_val),
                     max_val=1.0)


# ---------------------------------------------------------------------------------- the report


@dataclasses.dataclass(frozen=True)
class ImageQualityReport:
  """Feature-space quality of generated samples, with the sample counts and the extractor named.

  FID/KID/precision/recall are only comparable between reports with the same `feature_extractor`
  and sample counts, which is why they travel together.
  """

  fid: float
  kid: float
  kid_std: float
  precision: float
  recall: float
  diversity: float
  num_samples: int
  num_real: int
  feature_extractor: str

  @classmethod
  def from_features(cls, fake_feats: Any, real_feats: Any, feature_extractor: str, *,
                    seed: int = 0, k: int = 3, kid_subsets: int = 100,
                    kid_subset_size: int = 1000,
                    diversity_samples: int = 2000) -> 'ImageQualityReport':
    """Computes every metric from generated (`fake_feats`) and real features [N, D].

    `diversity` uses the first `diversity_samples` generated rows (it is O(N²)).
    """
    fake = np.asarray(fake_feats)
    real = np.asarray(real_feats)
    kid_mean, kid_std = kid(fake, real, num_subsets=kid_subsets, subset_size=kid_subset_size,
                            seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    return cls(fid=fid(fake, real), kid=kid_mean, kid_std=kid_std, precision=precision,
               recall=recall, diversity=diversity(fake[:diversity_samples]),
               num_samples=int(fake.shape[0]), num_real=int(real.shape[0]),
               feature_extractor=str(feature_extractor))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
