"""Flax Linen models: classifiers, GAN generators/discriminators, autoencoders, feature access.

Build by name with `get(name, **kwargs)`; `names()` lists them and `kind(name)` gives the family.
Your own `flax.linen.Module` joins with `register(name, cls, kind)`, or by import path:
`get('my_project.models:TinyNet', ...)`. `features.apply_with_features` reads any submodule's output
by path.
"""
from kd_jax.models.registry import KINDS, get, kind, names, register, valid_kwargs

__all__ = ['KINDS', 'get', 'kind', 'names', 'register', 'valid_kwargs']
