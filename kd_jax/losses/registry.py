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
from kd_jax.losses import contrast, diffusion, feature, generative, logit
from kd_jax.types import Array

LossFn = Callable[..., Array]

# The outputs-dict key families trainers produce (`kd_jax.keys`); roles are these names, so a term
# only names its layer (`'layer': 'stage2'`) and never needs an `inputs` remap for them.
STANDARD_ROLES: tuple[str, ...] = (
    'student_logits', 'teacher_logits', 'labels',
    'student_features', 'teacher_features',
    'adapted',              # student features through a learned adapter to the teacher's shape
    'vid_mean', 'vid_log_variance',  # VID's regressed mean and per-channel raw variance
    'student_images', 'teacher_images', 'target_images', 'input_images',
    'fake_logits',          # D logits on student samples
    'teacher_fake_logits',  # D logits on teacher samples
    'real_logits',          # D logits on real data
    # CRD: the memory bank's normalised scores [B, K+1] for each anchor side.
    'crd_student_scores', 'crd_teacher_scores',
    'loss_weight',          # diffusion: the per-example weight λ(σ) of the denoising objective
    'clean_images',         # diffusion: the clean data x behind the noisy input x + σ·n
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

  Raises:
    ConfigError (a ValueError): empty name, duplicate name, or one role per positional input not given.
  """
  roles = tuple(roles)
  if not name or not isinstance(name, str):
    raise errors.ConfigError(f'loss name must be a non-empty string, got {name!r}.')
  if name in _REGISTRY and not replace:
    raise errors.ConfigError(
        f"loss '{name}' is already registered; pick another name or pass replace=True.")
  arity = _positional_arity(fn)
  if arity is not None and arity != len(roles):
    raise errors.ConfigError(
        f"loss '{name}': {fn.__qualname__} takes {arity} positional inputs but {len(roles)} roles "
        f'were given ({roles}); give one role per positional input.')
  loss_def = LossDef(fn=fn, roles=roles)
  _REGISTRY[name] = loss_def
  return loss_def


def get(name: str) -> LossDef:
  """The `LossDef` registered as `name`, or the user loss at import path 'pkg.module:function'.

  A function named by import path is registered under that path on first use. Its roles are the
  names of its positional parameters, in order, so `def my_loss(student_logits, teacher_logits, *,
  temperature=1.0)` reads those two outputs keys; its hyperparameters are the keyword-only ones.

  Raises:
    ConfigError: unknown name (listing the known ones), or a bad import path or function.
  """
  from kd_jax import imports  # pylint: disable=import-outside-toplevel
  if isinstance(name, str) and name in _REGISTRY:
    return _REGISTRY[name]
  if not imports.is_import_path(name):
    raise errors.ConfigError(
        f"unknown loss {name!r}; known: {', '.join(names())}, or a loss function of your own as "
        "'pkg.module:function'.")
  fn = imports.resolve(name)
  if not callable(fn) or isinstance(fn, type):
    raise errors.ConfigError(f'loss {name!r} is {fn!r}, not a function; name a per-example loss '
                             'function fn(student_..., teacher_..., *, hyperparameter=...) -> [B].')
  try:
    params = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(f'loss {name!r}: cannot read its signature ({type(e).__name__}: {e}); '
                             'name a plain Python function.') from None
  positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                inspect.Parameter.POSITIONAL_OR_KEYWORD)]
  bad = ([p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL]
         + [p.name for p in positional if p.default is not inspect.Parameter.empty])
  if bad or not positional:
    raise errors.ConfigError(
        f'loss {name!r}: its positional parameters name the outputs it reads (e.g. student_logits, '
        f"teacher_logits) and must have no defaults, and hyperparameters go after '*'; "
        + (f'fix {", ".join(bad)}.' if bad else 'it has no positional parameters.'))
  return register(name, fn, [p.name for p in positional])


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
    'fitnet': (feature.fitnet, ('adapted', 'teacher_features')),
    'at': (feature.at, _FEATURES),
    'sp': (feature.sp, _FEATURES),
    'rkd': (feature.rkd, _FEATURES),
    'pkt': (feature.pkt, _FEATURES),
    'nst': (feature.nst, _FEATURES),
    'cc': (feature.cc, _FEATURES),
    'cc_repdistiller': (feature.cc_repdistiller, _FEATURES),
    'vid': (feature.vid, ('vid_mean', 'teacher_features', 'vid_log_variance')),
    # Contrastive (scores from contrast.contrast_scores; `num_data` is a run value, see compose).
    'crd': (contrast.crd, ('crd_student_scores', 'crd_teacher_scores')),
    # Generators.
    'l1': (generative.l1, _IMAGES),
    'l2': (generative.l2, _IMAGES),
    'lpips': (generative.lpips, _FEATURES),
    'feature_mse': (generative.feature_mse, _FEATURES),
    'gan_ns_g': (generative.gan_ns_g, ('fake_logits',)),
    'gan_ns_d': (generative.gan_ns_d, ('real_logits', 'fake_logits')),
    'tempered_sigmoid_kl': (generative.tempered_sigmoid_kl, ('fake_logits', 'teacher_fake_logits')),
    'relation_kl': (generative.relation_kl, _FEATURES),
    # Diffusion denoisers.
    'weighted_l2': (diffusion.weighted_l2, ('student_images', 'target_images', 'loss_weight')),
}

for _name, (_fn, _roles) in _BUILTINS.items():
  register(_name, _fn, _roles)
