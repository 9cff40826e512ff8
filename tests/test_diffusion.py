"""Diffusion math (EDM scalings, nested grids, samplers, distillation targets, weighted L2) against
independent NumPy computations, and a tiny teacher → compress / progressive / consistency chain."""
import numpy as np
import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.diffusion import edm, samplers, targets


def test_weighted_l2_matches_numpy():
  rng = np.random.default_rng(0)
  s, t, w = rng.normal(size=(3, 4, 4, 1)), rng.normal(size=(3, 4, 4, 1)), rng.uniform(size=3)
  got = np.asarray(losses.get('weighted_l2').fn(jnp.asarray(s), jnp.asarray(t), jnp.asarray(w)))
  np.testing.assert_allclose(got, w * ((s - t) ** 2).reshape(3, -1).mean(1), rtol=1e-5)


def test_edm_scalings_and_weight():
  sigma = np.array([0.01, 0.5, 3.0, 80.0])
  c_skip, c_out, c_in, c_noise = map(np.asarray, edm.scalings(jnp.asarray(sigma)))
  sd = 0.5
  np.testing.assert_allclose(c_skip, sd ** 2 / (sigma ** 2 + sd ** 2), rtol=1e-5)
  np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma ** 2 + sd ** 2), rtol=1e-5)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma ** 2 + sd ** 2), rtol=1e-5)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(edm.loss_weight(jnp.asarray(sigma))) * c_out ** 2, 1.0,
                             rtol=1e-5)
  cs, co, _, _ = edm.scalings(jnp.asarray([edm.SIGMA_MIN]), precond='consistency')
  assert float(cs[0]) == 1.0 and float(co[0]) == 0.0  # f(x, σ_min) = x


def test_step_grids_are_nested():
  fine, coarse = np.asarray(edm.step_sigmas(8)), np.asarray(edm.step_sigmas(4))
  np.testing.assert_allclose(fine[::2], coarse, rtol=1e-6)
  assert abs(fine[0] - 80.0) < 1e-3 and fine[-1] == 0.0 and np.all(np.diff(fine) < 0)


def test_progressive_target_one_step_lands_on_two_teacher_steps():
  rng = np.random.default_rng(1)
  x_t = rng.normal(size=(2, 3, 3, 1)) * 5
  denoise = lambda x, s: 0.3 * x  # any fixed teacher
  st, sm, ss = (jnp.asarray([5.0, 2.0]), jnp.asarray([2.0, 0.7]), jnp.asarray([0.7, 0.0]))
  x_s = targets.teacher_two_steps(denoise, jnp.asarray(x_t), st, sm, ss)
  x_tilde = targets.progressive_target(jnp.asarray(x_t), x_s, st, ss)
  # NumPy: a DDIM step of the student with denoised = x̃ must give x_s.
  r = (np.asarray(ss) / np.asarray(st))[:, None, None, None]
  np.testing.assert_allclose(np.asarray(x_tilde) + r * (x_t - np.asarray(x_tilde)),
                             np.asarray(x_s), rtol=1e-4, atol=1e-5)


def test_dmd_target_matches_numpy():
  rng = np.random.default_rng(2)
  x, real, fake = (rng.normal(size=(3, 4, 4, 1)) for _ in range(3))
  got = np.asarray(targets.dmd_target(*map(jnp.asarray, (x, real, fake))))
  norm = np.abs(x - real).reshape(3, -1).mean(1)[:, None, None, None]
  np.testing.assert_allclose(got, x - (fake - real) / (norm + 1e-6), rtol=1e-5, atol=1e-6)
  # Fake = real: the KL gradient vanishes and the target is x itself.
  np.testing.assert_allclose(np.asarray(targets.dmd_target(jnp.asarray(x), jnp.asarray(real),
                                                           jnp.asarray(real))), x, atol=1e-6)


def test_sampler_nfe_and_determinism():
  calls = []

  def denoise(x, s):
    calls.append(1)
    return 0.5 * x
  noise = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  a = samplers.sample(denoise, noise, 3, 'heun')
  b = samplers.sample(denoise, noise, 3, 'heun')
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert samplers.nfe('heun', 3) == 5 and samplers.nfe('euler', 3) == 3
  # Euler with D = 0.5·x: each step x' = D + (σ'/σ)(x − D), computed in NumPy.
  sig = np.asarray(edm.step_sigmas(3), np.float64)
  x = np.asarray(noise, np.float64) * sig[0]
  for s, s2 in zip(sig[:-1], sig[1:]):
    d = 0.5 * x
    x = d + (s2 / s) * (x - d)
  np.testing.assert_allclose(np.asarray(samplers.sample(denoise, noise, 3, 'euler')), x,
                             rtol=1e-4, atol=1e-6)


def test_edm_unet_shapes_features_and_consistency_boundary():
  from kd_jax import models
  from kd_jax.models import features
  x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
  m = models.get('edm_unet', channels=4, channel_mult=[1, 2])
  v = m.init(jax.random.key(1), x, jnp.ones((2,)))
  assert m.apply(v, x, jnp.ones((2,))).shape == x.shape
  assert {'mid1', 'enc0_0', 'dec1_1'} <= set(features.feature_paths(m, v, x, sigma=jnp.ones((2,))))
  cm = models.get('edm_unet', channels=4, channel_mult=[1, 2], precond='consistency')
  np.testing.assert_allclose(np.asarray(cm.apply(v, x, jnp.full((2,), edm.SIGMA_MIN))),
                             np.asarray(x), atol=1e-6)  # f(x, σ_min) = x with the same params
