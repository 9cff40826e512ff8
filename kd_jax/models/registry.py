"""Model registry: config name → (module class, fixed arguments, family).

Every model kd_jax can build is listed in `_MODELS` below, so where a name comes from is one `grep`
away. A config holds `model = {'name': 'resnet20', 'num_classes': 10, ...}`; the other keys are the
module's dataclass fields and are checked here, so a typo fails before anything is built.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import flax.linen as nn

from kd_jax import errors
from kd_jax.models import autoencoder, dcgan, mobilenet_v2, resnet, small_cnn, stylegan2

KINDS = ('classifier', 'generator', 'discriminator', 'autoencoder')


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
    'dcgan_generator': ModelDef(dcgan.DCGANGenerator, 'generator'),
    'dcgan_discriminator': ModelDef(dcgan.DCGANDiscriminator, 'discriminator'),
    'stylegan2_generator': ModelDef(stylegan2.StyleGAN2Generator, 'generator'),
    'stylegan2_discriminator': ModelDef(stylegan2.StyleGAN2Discriminator, 'discriminator'),
    'conv_autoencoder': ModelDef(autoencoder.ConvAutoencoder, 'autoencoder'),
}


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_MODELS)


def _lookup(name: str) -> ModelDef:
  if name not in _MODELS:
    close = difflib.get_close_matches(str(name), _MODELS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ''
    raise errors.ConfigError(f"unknown model {name!r} in config.<field>.name; {hint}"
                             f"known: {', '.join(names())}.")
  return _MODELS[name]


def kind(name: str) -> str:
  """The family of model `name`: 'classifier', 'generator', 'discriminator' or 'autoencoder'."""
  return _lookup(name).kind


def valid_kwargs(name: str) -> list[str]:
  """The keyword arguments `get(name, ...)` accepts (the module's fields minus pinned ones)."""
  spec = _lookup(name)
  pinned = {k for k, _ in spec.fixed}
  return [f.name for f in dataclasses.fields(spec.cls)
          if f.init and f.name not in ('parent', 'name') and f.name not in pinned]


def get(name: str, **kwargs: Any) -> nn.Module:
  """Builds model `name` with `kwargs` (e.g. `get('resnet20', num_classes=10, width=16)`).

  Raises:
    ConfigError: unknown name, unknown or pinned keyword, or a bad value (checked by the module).
  """
  spec = _lookup(name)
  valid = valid_kwargs(name)
  for key in kwargs:
    if key not in valid:
      pinned = dict(spec.fixed)
      if key in pinned:
        generic = [n for n, d in _MODELS.items() if d.cls is spec.cls and not d.fixed]
        raise errors.ConfigError(
            f"model '{name}' fixes {key}={pinned[key]}; remove config.<field>.{key}, or use "
            f"name='{generic[0]}' to set {key} yourself.")
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f"did you mean '{close[0]}'? " if close else ''
      raise errors.ConfigError(f"unknown argument {key!r} for model '{name}' in "
                               f"config.<field>; {hint}valid: {', '.join(valid)}.")
  return spec.cls(**dict(spec.fixed), **kwargs)
