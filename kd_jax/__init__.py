"""kd_jax: knowledge distillation in JAX/Flax — classifiers and image generators."""
from kd_jax import xla_cpu as _xla_cpu

# Before any JAX computation creates the backend (XLA reads XLA_FLAGS once): see kd_jax/xla_cpu.py.
_xla_cpu.apply_defaults()
