"""The distillation core (`core.build` → `Distiller`) and its trainable extras (heads, CRD)."""
from kd_jax.distill.core import Critic, Distiller, Frozen, build

__all__ = ['Critic', 'Distiller', 'Frozen', 'build']
