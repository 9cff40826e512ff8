"""XLA:CPU defaults that kd_jax measured to be faster (issue 13), applied before JAX's backend starts.

jaxlib 0.10 routes convolutions, dots and reductions on the CPU through YNNPACK library fusions
(`__ynn_fusion` in the optimized HLO) by default. On kd_jax's conv nets they are slower than
XLA's own Eigen kernels: with YNNPACK off, the four `benchmarks/bench_vs_pytorch.py` workloads
train 1.13-1.73× faster, and `benchmarks/bench_conv_ops.py` sums each conv's forward + both
gradients to 157 ms instead of 230 ms (BENCHMARKS.md, "kd_jax against PyTorch"). The flag only
chooses which kernels compute the same convolutions, so losses agree to float rounding.

XLA reads XLA_FLAGS once, when the first backend is created; `import kd_jax` sets it before
then if it comes before JAX's first computation (as in `launch.py`). Flags the user already put in XLA_FLAGS win, and
`KD_JAX_XLA_DEFAULTS=0` turns these defaults off. The `xla_cpu_*` flags do not touch GPU or TPU
backends.
"""
import os
from importlib import metadata
from typing import MutableMapping

# (flag, value) pairs; an empty value turns the YNNPACK fusion types off.
DEFAULTS = (('--xla_cpu_experimental_ynn_fusion_type', ''),)
# Measured with these jaxlib releases; an unknown flag is fatal to XLA, so other releases (which
# may have renamed this experimental flag) are left alone.
TESTED_JAXLIB = ('0.10.',)


def _jaxlib_version() -> str:
  try:
    return metadata.version('jaxlib')
  except metadata.PackageNotFoundError:
    return ''


def apply_defaults(environ: MutableMapping[str, str] = os.environ,
                   jaxlib_version: str | None = None) -> list[str]:
  """Appends kd_jax's XLA:CPU defaults to `environ['XLA_FLAGS']`; returns the flags it added.

  A flag already present in XLA_FLAGS (with any value) is kept as the user set it.
  """
  if environ.get('KD_JAX_XLA_DEFAULTS', '1') == '0':
    return []
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not version.startswith(TESTED_JAXLIB):
    return []
  current = environ.get('XLA_FLAGS', '')
  present = {token.split('=')[0] for token in current.split()}
  added = [f'{flag}={value}' for flag, value in DEFAULTS if flag not in present]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current.strip(), *added]).strip()
  return added
