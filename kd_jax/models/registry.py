"""Model registry: name → (module class, fixed arguments, family).

Every model kd_jax ships is listed in `_MODELS` below, so where a name comes from is one `grep` away.
User models join without editing kd_jax, either by `register(name, cls, kind)` or by naming the class
by import path, 'pkg.module:ClassName' (see `get`). A model is built from its name and keyword
arguments, the module's dataclass fields, which are checked here, so a typo fails before anything is
built.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, Mapping

import flax.linen as nn

from kd_jax import errors, imports
from kd_jax.models import autoencoder, dcgan, mobilenet_v2, resnet, small_cnn, stylegan2
from kd_jax.models import stylegan2_ada, unet
from kd_jax.models import torchvision_mobilenet_v2, torchvision_resnet

KINDS = ('classifier', 'generator', 'discriminator', 'autoencoder', 'denoiser')
# A class named by import path declares its family with this class attribute (default 'classifier').
KIND_ATTRIBUTE = 'kd_jax_kind'


@dataclasses.dataclass(frozen=True)
class ModelDef:
  cls: type[nn.Module]
  kind: str
  fixed: tuple[tuple[str, Any], ...] = ()  # arguments a named variant pins (e.g. resnet20's depth)


_MODELS: dict[str, ModelDef] = {
    'resnet': ModelDef(resnet.ResNet, 'classifier'),
    'resnet20': ModelDef(resnet.ResNet, 'classifier', (('depth', 20),)),
    'resnet56': ModelDef(resnet.ResNet, 'classifier', (('depth', 56),)),
    'wrn': ModelDef(resnet.WideResNet, 'classifier'),
    'small_cnn': ModelDef(small_cnn.SmallCNN, 'classifier'),
    'mobilenet_v2': ModelDef(mobilenet_v2.MobileNetV2, 'classifier'),
    'torchvision_resnet': ModelDef(torchvision_resnet.TorchvisionResNet, 'classifier'),
    'torchvision_mobilenet_v2': ModelDef(torchvision_mobilenet_v2.TorchvisionMobileNetV2,
                                         'classifier'),
    'dcgan_generator': ModelDef(dcgan.DCGANGenerator, 'generator'),
    'dcgan_discriminator': ModelDef(dcgan.DCGANDiscriminator, 'discriminator'),
    'stylegan2_generator': ModelDef(stylegan2.StyleGAN2Generator, 'generator'),
    'stylegan2_discriminator': ModelDef(stylegan2.StyleGAN2Discriminator, 'discriminator'),
    # NVIDIA's official architecture (official field names: z_dim, c_dim, img_resolution, …), so
    # an imported StyleGAN2-ADA snapshot and one trained here are the same module.
    'stylegan2_ada_generator': ModelDef(stylegan2_ada.Generator, 'generator'),
    'stylegan2_ada_discriminator': ModelDef(stylegan2_ada.Discriminator, 'discriminator'),
    'conv_autoencoder': ModelDef(autoencoder.ConvAutoencoder, 'autoencoder'),
    # D(x; σ) with EDM (or consistency) preconditioning: diffusion teachers and students.
    'edm_unet': ModelDef(unet.EDMUNet, 'denoiser'),
}


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_MODELS)


def _fields(cls: type[nn.Module]) -> list[str]:
  return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')]


def _check_def(what: str, cls: Any, kind_: Any, fixed: Iterable[tuple[str, Any]]) -> ModelDef:
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise errors.ConfigError(f'{what}: {cls!r} is not a flax.linen.Module subclass; give the model '
                             'class itself (not an instance or a function).')
  if kind_ not in KINDS:
    raise errors.ConfigError(f'{what}: kind {kind_!r} is not one of {", ".join(KINDS)}.')
  fixed = tuple((str(k), v) for k, v in fixed)
  bad = [k for k, _ in fixed if k not in _fields(cls)]
  if bad:
    raise errors.ConfigError(f'{what}: fixed argument(s) {", ".join(bad)} are not fields of '
                             f'{cls.__name__}; its fields: {", ".join(_fields(cls))}.')
  return ModelDef(cls, kind_, fixed)


def register(name: str, cls: type[nn.Module], kind: str,  # pylint: disable=redefined-outer-name
             fixed: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), *,
             replace: bool = False) -> ModelDef:
  """Registers model class `cls` under `name`, so `get(name, **kwargs)` builds it.

  Args:
    name: the model's name (no ':', which marks an import path).
    cls: a `flax.linen.Module` subclass; its dataclass fields are the keyword arguments `get` accepts.
    kind: its family, one of `KINDS`; trainers check it (a GAN trainer wants a 'generator').
    fixed: arguments this name pins, e.g. {'depth': 20} (users may not set them).
    replace: allow replacing an existing name (otherwise two modules cannot silently fight over it).

  Raises:
    ConfigError: bad name, a duplicate name without replace=True, a class that is not a Linen
      module, an unknown kind, or a fixed argument that is not a field of `cls`.
  """
  if not isinstance(name, str) or not name or ':' in name:
    raise errors.ConfigError(f"model name must be a non-empty string without ':', got {name!r}.")
  if name in _MODELS and not replace:
    raise errors.ConfigError(f"model '{name}' is already registered (as {_MODELS[name].cls.__name__}); "
                             'pick another name or pass replace=True.')
  items = fixed.items() if isinstance(fixed, Mapping) else fixed
  spec = _check_def(f"register('{name}')", cls, kind, items)
  _MODELS[name] = spec
  return spec


def _lookup(name: str) -> ModelDef:
  if imports.is_import_path(name):
    cls = imports.resolve(name)
    return _check_def(f'model {name!r}', cls, getattr(cls, KIND_ATTRIBUTE, 'classifier'), ())
  if name not in _MODELS:
    close = difflib.get_close_matches(str(name), _MODELS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ''
    raise errors.ConfigError(f"unknown model {name!r}; {hint}known: {', '.join(names())}, or a "
                             "flax.linen.Module of your own as 'pkg.module:ClassName'.")
  return _MODELS[name]


def kind(name: str) -> str:
  """The family of model `name`: 'classifier', 'generator', 'discriminator' or 'autoencoder'.

  For an import path it is the class's `kd_jax_kind` attribute, or 'classifier' without one.
  """
  return _lookup(name).kind


def valid_kwargs(name: str) -> list[str]:
  """The keyword arguments `get(name, ...)` accepts (the module's fields minus pinned ones)."""
  spec = _lookup(name)
  pinned = {k for k, _ in spec.fixed}
  return [f for f in _fields(spec.cls) if f not in pinned]


def get(name: str, **kwargs: Any) -> nn.Module:
  """Builds model `name` with `kwargs` (e.g. `get('resnet20', num_classes=10, width=16)`).

  `name` is a registered name (`names()`) or an import path 'pkg.module:ClassName' of a
  `flax.linen.Module` subclass, built as `ClassName(**kwargs)`; its family (see `kind`) is its class
  attribute `kd_jax_kind` ('classifier' when absent), e.g. `kd_jax_kind = 'generator'`.

  Raises:
    ConfigError: unknown name or import path, unknown or pinned keyword, or a bad value (checked by
      the module).
  """
  spec = _lookup(name)
  valid = valid_kwargs(name)
  for key in kwargs:
    if key not in valid:
      pinned = dict(spec.fixed)
      if key in pinned:
        generic = [n for n, d in _MODELS.items() if d.cls is spec.cls and not d.fixed]
        alternative = (f", or use the model '{generic[0]}' to set {key} yourself" if generic
                       else '')
        raise errors.ConfigError(
            f"model '{name}' fixes {key}={pinned[key]}; drop the argument {key}{alternative}.")
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f"did you mean '{close[0]}'? " if close else ''
      raise errors.ConfigError(f"unknown argument {key!r} for model '{name}'; {hint}"
                               f"valid: {', '.join(valid)}.")
  return spec.cls(**dict(spec.fixed), **kwargs)
