"""Flax Linen models: classifiers, GAN generators/discriminators, autoencoders, feature access.

Build by config name with `get(name, **kwargs)`; `names()` lists them and `kind(name)` gives the
family. `features.apply_with_features` reads any submodule's output by path. `PRESETS` holds
teacher/student sizes with a ≥ 8× cost gap.
"""
from kd_jax.models.presets import PRESETS, preset
from kd_jax.models.registry import KINDS, get, kind, names, valid_kwargs

__all__ = ['KINDS', 'PRESETS', 'get', 'kind', 'names', 'preset', 'valid_kwargs']
