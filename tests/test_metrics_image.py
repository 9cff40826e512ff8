"""Image metrics: FID formula, KID, precision/recall, diversity, PSNR/SSIM, feature extraction."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from kd_jax.metrics import image


def _feats(n, d, seed, shift=0.0):
  rng = np.random.default_rng(seed)
  # Correlated features, so the covariances are full (not ~identity).
  return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + shift


def test_frechet_distance_matches_direct_formula():
  a, b = _feats(300, 8, 0), _feats(250, 8, 1, shift=0.3)
  mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
  mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
  direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2)).real
  # An independent route: Tr sqrt(S1 S2) = Tr sqrt(S1^½ S2 S1^½), a symmetric PSD matrix.
  r1 = scipy.linalg.sqrtm(s1).real
  eig = np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)
  symmetric = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum()
  got = image.frechet_distance(mu1, s1, mu2, s2)
  assert got == pytest.approx(direct, rel=1e-4)
  assert got == pytest.approx(symmetric, rel=1e-4)
  assert image.fid(a, b) == pytest.approx(got, rel=1e-10)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
  v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
  mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  expected = 1 + 4 + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  assert image.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_fid_zero_for_same_features_and_shift_adds_squared_norm():
  x = _feats(200, 6, 2)
  assert abs(image.fid(x, x)) < 1e-6
  delta = np.array([0.5, -1.0, 0.0, 2.0, 0.1, 0.0])
  assert image.fid(x, x + delta) == pytest.approx(np.sum(delta ** 2), rel=1e-5)


def test_fid_finite_with_fewer_samples_than_dimensions():
  a, b = _feats(5, 16, 3), _feats(5, 16, 4, shift=1.0)
  value = image.fid(a, b)
  assert np.isfinite(value) and value > 0


def test_frechet_distance_rejects_mismatched_stats():
  with pytest.raises(ValueError, match='Mismatched'):
    image.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _mmd2_unbiased_loops(x, y):
  k = lambda u, v: (u @ v / x.shape[1] + 1) ** 3
  m = len(x)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
  return xx + yy - 2 * xy


def test_kid_equals_unbiased_polynomial_mmd():
  a, b = _feats(12, 3, 5), _feats(12, 3, 6, shift=0.5)
  # One subset of every row: a permutation, and MMD² does not depend on the order.
  mean, std = image.kid(a, b, num_subsets=1, subset_size=12, seed=0)
  assert mean == pytest.approx(_mmd2_unbiased_loops(a, b), rel=1e-8)
  assert std == 0.0


def test_kid_near_zero_for_same_distribution_and_larger_when_shifted():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
  near, near_std = image.kid(a, b, num_subsets=20, subset_size=300, seed=1)
  far, _ = image.kid(a, b + 0.5, num_subsets=20, subset_size=300, seed=1)
  assert abs(near) < 3 * near_std + 1e-3
  assert far > 10 * abs(near)
  # Subsets are clamped to the sample count, so small evaluations still run.
  assert np.isfinite(image.kid(a[:20], b[:30], subset_size=1000, num_subsets=3)[0])


def test_precision_recall_identical_disjoint_and_mode_dropping():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(300, 4))
  assert image.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
  assert image.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
  # Two real modes, fakes only in one: faithful (high precision) but half the modes (low recall).
  two_modes = np.concatenate([rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 20.0])
  one_mode = rng.normal(size=(200, 4))
  precision, recall = image.precision_recall(two_modes, one_mode, k=3)
  assert precision > 0.9
  assert 0.3 < recall < 0.6


def test_precision_recall_blocks_agree_with_one_block(monkeypatch):
  rng = np.random.default_rng(1)
  real, fake = rng.normal(size=(90, 3)), rng.normal(size=(70, 3)) + 0.5
  whole = image.precision_recall(real, fake, k=2)
  monkeypatch.setattr(image, '_BLOCK_ROWS', 16)
  assert image.precision_recall(real, fake, k=2) == whole


def test_diversity():
  assert image.diversity(np.ones((10, 5))) == 0.0
  assert image.diversity(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
  pts = np.array([[0.0], [1.0], [3.0]])
  assert image.diversity(pts) == pytest.approx((1 + 3 + 2) / 3)  # pairs i != j, each twice


def test_psnr_identical_is_inf_and_constant_offset_known():
  rng = np.random.default_rng(0)
  a = rng.uniform(-0.5, 0.5, size=(3, 16, 16, 1)).astype(np.float32)
  assert np.all(np.isinf(np.asarray(image.psnr(a, a))))
  # +0.2 in [-1, 1] is +0.1 in [0, 1]: MSE 0.01 → 20 dB.
  out = np.asarray(image.psnr(a, a + 0.2))
  assert out.shape == (3,)
  np.testing.assert_allclose(out, 20.0, rtol=1e-4)
  # The same pictures on a [0, 255] scale give the same PSNR.
  a255, b255 = (a + 1) * 127.5, (a + 1.2) * 127.5
  np.testing.assert_allclose(image.psnr(a255, b255, max_val=255.0, min_val=0.0), 20.0, rtol=1e-4)


def test_ssim_identical_is_one_and_noise_lowers_it():
  rng = np.random.default_rng(0)
  a = np.tanh(rng.normal(size=(2, 16, 16, 3))).astype(np.float32)
  np.testing.assert_allclose(image.ssim(a, a), 1.0, atol=1e-5)
  noisy = np.asarray(image.ssim(a, np.clip(a + rng.normal(scale=0.3, size=a.shape), -1, 1)))
  assert noisy.shape == (2,) and np.all(noisy < 0.95)


def test_extract_features_batches_pads_and_compiles_once():
  traces = []

  def fn(x):
    traces.append(x.shape)
    return jnp.stack([x.mean(axis=(1, 2, 3)), x.max(axis=(1, 2, 3))], axis=-1)

  images = np.random.default_rng(0).uniform(-1, 1, size=(10, 4, 4, 1)).astype(np.float32)
  expected = np.stack([images.mean(axis=(1, 2, 3)), images.max(axis=(1, 2, 3))], axis=-1)
  got = image.extract_features(fn, images, batch_size=4)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert traces == [(4, 4, 4, 1)]  # the 2-image tail was padded, not recompiled
  from_iter = image.extract_features(fn, iter([images[:3], images[3:]]), batch_size=4)
  np.testing.assert_allclose(from_iter, expected, rtol=1e-6)


def test_image_quality_report_names_count_and_extractor():
  rng = np.random.default_rng(0)
  fake, real = rng.normal(size=(40, 4)), rng.normal(size=(50, 4))
  report = image.ImageQualityReport.from_features(fake, real, 'fmnist_cnn@penultimate',
                                                  kid_subsets=5, kid_subset_size=20)
  d = report.to_dict()
  assert d['num_samples'] == 40 and d['num_real'] == 50
  assert d['feature_extractor'] == 'fmnist_cnn@penultimate'
  assert d['fid'] == pytest.approx(image.fid(fake, real))
  assert set(d) >= {'fid', 'kid', 'kid_std', 'precision', 'recall', 'diversity'}
  json.dumps(d)  # plain Python types
