"""Loss registry: config name -> (per-example loss function, roles of its positional inputs).

Roles name, in order, the keys of the outputs dict the trainer builds that feed the loss's positional
arguments; `compose` looks them up (and lets a config remap them with `inputs=`). All built-in losses are
listed in `_BUILTINS` below, so where a name comes from is one `grep` away.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from kd_jax import errors
from kd_jax.losses import contrast, feature, generative, logit
from kd_jax.types import Array

LossFn = Callable[..., Array]

# The outputs-dict keys trainers provide by default (a config may map a role to any other key).
STANDARD_ROLES: tuple[str, ...] = (
    'student_logits', 'teacher_logits', 'labels',
    'student_features', 'teacher_features',
    'student_images', 'teacher_images',
    'fake_logits',          # D logits on student samples
    'teacher_fake_logits',  # D logits on teacher samples
    'real_logits',          # D logits on real data
    'log_variance',         # VID's per-channel raw variance parameter
    # CRD: the memory bank's normalised scores [B, K+1] for each anchor side, and the bank size.
    'crd_student_scores', 'crd_teacher_scores', 'crd_num_data',
)


@dataclasses.dataclass(frozen=True)
class LossDef:
  """A registered loss: `fn(*[outputs[r] for r in roles], **hyperparameters) -> [B]`."""
  fn: LossFn
  roles: tuple[str, ...]

  @property
  def hyperparameters(self) -> dict[str, Any]:
    """Keyword-only hyperparameters of `fn` and their defaults (the valid `kwargs` of a term)."""
    params = inspect.signature(self.fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


_REGISTRY: dict[str, LossDef] = {}


def _positional_arity(fn: LossFn) -> int | None:
  """Number of positional parameters, or None if fn takes *args."""
  params = inspect.signature(fn).parameters.values()
  if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
    return None
  return sum(p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
             for p in params)


def register(name: str, fn: LossFn, roles: tuple[str, ...] | list[str], *, replace: bool = False) -> LossDef:
  """Registers `fn` under `name` with the roles of its positional inputs, in order.

  Roles should be `STANDARD_ROLES` where they fit; any other string is an outputs-dict key the trainer
  must provide. Registering an existing name raises unless `replace=True` (so two modules cannot
  silently fight over a name).
  """
  roles = tuple(roles)
  if not name or not isinstance(name, str):
    raise ValueError(f'loss name must be a non-empty string, got {name!r}.')
  if name in _REGISTRY and not replace:
    raise ValueError(f"loss '{name}' is already registered; pick another name or pass replace=True.")
  arity = _positional_arity(fn)
  if arity is not None and arity != len(roles):
    raise ValueError(f"loss '{name}': {fn.__qualname__} takes {arity} positional inputs but "
                     f'{len(roles)} roles were given ({roles}); give one role per positional input.')
  loss_def = LossDef(fn=fn, roles=roles)
  _REGISTRY[name] = loss_def
  return loss_def


def get(name: str) -> LossDef:
  """The `LossDef` registered as `name`; ConfigError listing the known names otherwise."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise errors.ConfigError(
        f"unknown loss {name!r} in config.losses; known: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
  """All registered loss names, sorted."""
  return tuple(sorted(_REGISTRY))


_LOGITS = ('student_logits', 'teacher_logits')
_FEATURES = ('student_features', 'teacher_features')
_IMAGES = ('student_images', 'teacher_images')

_BUILTINS: dict[str, tuple[LossFn, tuple[str, ...]]] = {
    # Classification.
    'kd': (logit.kd, _LOGITS),
    'ce': (logit.ce, ('student_logits', 'labels')),
    'hard_ce': (logit.hard_ce, _LOGITS),
    'reverse_kl': (logit.reverse_kl, _LOGITS),
    'js': (logit.js, _LOGITS),
    'logit_mse': (logit.logit_mse, _LOGITS),
    'dkd': (logit.dkd, _LOGITS + ('labels',)),
    'dist': (logit.dist, _LOGITS),
    # Features (already adapted by the trainer).
    'fitnet': (feature.fitnet, _FEATURES),
    'at': (feature.at, _FEATURES),
    'sp': (feature.sp, _FEATURES),
    'rkd': (feature.rkd, _FEATURES),
    'pkt': (feature.pkt, _FEATURES),
    'nst': (feature.nst, _FEATURES),
    'cc': (feature.cc, _FEATURES),
    'vid': (feature.vid, _FEATURES + ('log_variance',)),
    # Contrastive (scores from contrast.contrast_scores; the trainer provides the dataset size).
    'crd': (contrast.crd, ('crd_student_scores', 'crd_teacher_scores', 'crd_num_data')),
    # Generators.
    'l1': (generative.l1, _IMAGES),
    'l2': (generative.l2, _IMAGES),
    'lpips': (generative.lpips, _FEATURES),
    'feature_mse': (generative.feature_mse, _FEATURES),
    'gan_ns_g': (generative.gan_ns_g, ('fake_logits',)),
    'gan_ns_d': (generative.gan_ns_d, ('real_logits', 'fake_logits')),
    'tempered_sigmoid_kl': (generative.tempered_sigmoid_kl, ('fake_logits', 'teacher_fake_logits')),
    'relation_kl': (generative.relation_kl, _FEATURES),
}

for _name, (_fn, _roles) in _BUILTINS.items():
  register(_name, _fn, _roles)
