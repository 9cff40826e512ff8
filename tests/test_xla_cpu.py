"""kd_jax's XLA:CPU defaults (kd_jax/xla_cpu.py): set before the backend, user flags win, and the
compiled convolutions really leave YNNPACK (checked on the optimized HLO in a fresh process)."""
import os
import subprocess
import sys

import pytest

from kd_jax import xla_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_appends_to_existing_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  added = xla_cpu.apply_defaults(env, jaxlib_version='0.10.2')
  assert added == ['--xla_cpu_experimental_ynn_fusion_type=']
  assert env['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=8 '
                              '--xla_cpu_experimental_ynn_fusion_type=')
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.10.2') == []  # idempotent
  assert env['XLA_FLAGS'].count('ynn_fusion_type') == 1


def test_user_value_and_opt_out_win():
  env = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE'}
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.10.2') == []
  assert env['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE'
  env = {'KD_JAX_XLA_DEFAULTS': '0'}
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.10.2') == []
  assert 'XLA_FLAGS' not in env


def test_untested_jaxlib_is_left_alone():
  # An experimental flag XLA does not know aborts the process, so other releases get nothing.
  env = {}
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.11.0') == []
  assert env == {}


_PROBE = """
import jax, jax.numpy as jnp
import kd_jax
x, w = jnp.ones((8, 14, 14, 32)), jnp.ones((3, 3, 32, 16))
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
print('YNN' if '__ynn_fusion' in conv.lower(x, w).compile().as_text() else 'EIGEN')
"""


@pytest.mark.parametrize('opt_out,expected', [('1', 'EIGEN'), ('0', 'YNN')])
def test_import_kd_jax_switches_the_compiled_conv(opt_out, expected):
  if not xla_cpu._jaxlib_version().startswith(xla_cpu.TESTED_JAXLIB):  # pylint: disable=protected-access
    pytest.skip(f'defaults apply to jaxlib {xla_cpu.TESTED_JAXLIB} only')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['KD_JAX_XLA_DEFAULTS'] = opt_out
  out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, env=env,
                       cwd=ROOT, check=True)
  assert out.stdout.strip().splitlines()[-1] == expected
