"""Composition of registered losses into one weighted objective, built from the config's term list.

What a weight multiplies — the one reduction of the whole library:

    total = Σ_i w_i(step) · mean_b ℓ_i(b)

ℓ_i is the per-example output [B] of term i's loss (with its kwargs), mean_b is the batch mean (or the
masked mean over rows with mask[b] True), w_i(step) is a constant or an optax schedule. So e.g. Hinton's
α/(1−α) mixing is two terms, `[('kd', α), ('ce', 1 - α)]`, and a warm-up is a schedule on one weight.
Each term is logged twice: `label` = w_i(step) · mean_b ℓ_i and `label/raw` = mean_b ℓ_i.

A term is `(name, weight)`, `(name, weight, kwargs)` or a mapping with keys `name`, `weight` and
optional `kwargs`, `label` (default: name; repeats become name_1, name_2, ...), `layer` (the module
path feature roles read: 'stage2', or 'stage1:stage2' for student:teacher) and `inputs` (role ->
outputs-dict key; default `kd_jax.keys.for_role(role, layer)`, i.e. the role itself for logits,
labels and images). A weight is a float, a callable step -> value, or a
mapping `{'schedule': '<optax schedule function>', **its_arguments}`.

Padding caveat: the mask only drops rows from the mean. Batch-relational losses (sp, rkd, pkt, cc,
dist, relation_kl) still see padded rows inside their batch statistics, so evaluate them on full batches.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
import types
from typing import Any, Callable, Iterable, Mapping

import jax.numpy as jnp
import optax

from kd_jax import errors, keys
from kd_jax.losses import registry
from kd_jax.types import Array

Weight = float | Callable[[Any], Any]

_TERM_KEYS = ('name', 'weight', 'kwargs', 'label', 'layer', 'inputs')
_SCHEDULES = tuple(
    n for n in dir(optax.schedules)
    if (n.endswith('_schedule') or n.endswith('_schedules') or n == 'exponential_decay')
    and inspect.isfunction(getattr(optax.schedules, n)))


@dataclasses.dataclass(frozen=True, eq=False)
class Term:
  """One weighted loss term of a `Composite` (built by `compose`; not meant to be made by hand)."""
  label: str
  name: str
  loss: registry.LossDef
  weight: Weight
  kwargs: Mapping[str, Any]
  inputs: tuple[tuple[str, str], ...]  # (role, outputs-dict key), in the loss's positional order
  where: str  # e.g. 'config.losses[2]', for error messages

  def weight_at(self, step: Array | int) -> Array:
    """w(step) as a float32 scalar."""
    w = self.weight(step) if callable(self.weight) else self.weight
    return jnp.asarray(w, jnp.float32)

  def per_example(self, outputs: Mapping[str, Array]) -> Array:
    """ℓ(b) for b in the batch: the loss applied to the mapped outputs with the term's kwargs, [B]."""
    args = []
    for role, key in self.inputs:
      if key not in outputs:
        raise errors.ConfigError(
            f"loss term '{self.label}' ({self.name}, {self.where}) needs outputs['{key}'] for its role "
            f"'{role}', but the trainer provided only {sorted(outputs)}; map the role to one of those "
            f"keys with inputs={{'{role}': ...}} in {self.where}, or use a trainer that produces '{key}'.")
      args.append(outputs[key])
    try:
      values = self.loss.fn(*args, **self.kwargs)
    except errors.ConfigError as e:
      # Name the config entry: the loss alone cannot know which term of which list it is.
      raise errors.ConfigError(f"{self.where} ('{self.label}'): {e}") from None
    if jnp.ndim(values) != 1:
      raise ValueError(f"loss '{self.name}' must return a per-example array [B], got shape "
                       f'{jnp.shape(values)} (term {self.where}).')
    return values


def _masked_mean(values: Array, mask: Array | None, term: Term) -> Array:
  values = values.astype(jnp.promote_types(values.dtype, jnp.float32))
  if mask is None:
    return jnp.mean(values)
  if jnp.shape(mask) != jnp.shape(values):
    raise errors.ConfigError(
        f"mask of shape {jnp.shape(mask)} does not match the per-example loss of term '{term.label}' "
        f'with shape {jnp.shape(values)}; pass a [batch] mask of the batch fed to the losses.')
  keep = jnp.asarray(mask).astype(bool)
  # where (not multiply): a NaN in a padded row must not leak into the mean.
  return jnp.sum(jnp.where(keep, values, 0.0)) / jnp.maximum(jnp.sum(keep), 1)


@dataclasses.dataclass(frozen=True, eq=False)
class Composite:
  """The weighted sum of loss terms; pure, and safe to close over in (or pass static to) `jax.jit`.

  Hashing and equality are by identity, so a Composite can be a static jit argument; build it once.
  """
  terms: tuple[Term, ...]

  def __call__(self, outputs: Mapping[str, Array], step: Array | int,
               mask: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Returns `(total, terms)`.

    Args:
      outputs: the trainer's outputs dict (keys as in `required_keys`).
      step: training step (a Python int or a traced int) for the weight schedules.
      mask: optional [B] bool (or 0/1) array; rows with False are left out of every batch mean.

    Returns:
      total = Σ_i w_i(step) · mean_b ℓ_i(b), and a dict with `label` -> weighted value and
      `label/raw` -> unweighted batch mean, for every term.
    """
    total = jnp.zeros([], jnp.float32)
    logged: dict[str, Array] = {}
    for term in self.terms:
      raw = _masked_mean(term.per_example(outputs), mask, term)
      value = term.weight_at(step) * raw
      logged[term.label] = value
      logged[term.label + '/raw'] = raw
      total = total + value
    return total, logged

  @property
  def labels(self) -> tuple[str, ...]:
    """Term labels, in config order."""
    return tuple(t.label for t in self.terms)

  @property
  def required_keys(self) -> frozenset[str]:
    """The outputs-dict keys the trainer must provide."""
    return frozenset(key for t in self.terms for _, key in t.inputs)


def _as_dict(value: Any) -> dict[str, Any] | None:
  """A plain dict from a Mapping or an ml_collections ConfigDict (duck-typed); None otherwise."""
  if isinstance(value, Mapping):
    return dict(value)
  if hasattr(value, 'to_dict') and hasattr(value, 'keys'):
    return value.to_dict()
  return None


def _build_weight(value: Any, where: str) -> Weight:
  if isinstance(value, bool):
    raise errors.ConfigError(f'{where}.weight={value!r} is a bool; give a number or a schedule.')
  if isinstance(value, numbers.Real) or (hasattr(value, 'ndim') and value.ndim == 0 and not callable(value)):
    return float(value)
  if callable(value):
    return value
  spec = _as_dict(value)
  if spec is None:
    raise errors.ConfigError(
        f'{where}.weight={value!r} is not a number, a callable schedule or a schedule mapping; use e.g. '
        f"1.0 or {{'schedule': 'linear_schedule', 'init_value': 0., 'end_value': 1., "
        f"'transition_steps': 1000}}.")
  name = spec.pop('schedule', None)
  if name not in _SCHEDULES:
    raise errors.ConfigError(
        f'{where}.weight.schedule={name!r} is not an optax schedule; use one of: {", ".join(_SCHEDULES)}.')
  try:
    schedule = getattr(optax.schedules, name)(**spec)
    schedule(0)  # Surface bad argument values now, not inside the first jitted step.
  except Exception as e:  # pylint: disable=broad-except
    raise errors.ConfigError(
        f'{where}.weight: optax.{name}(**{spec}) failed ({type(e).__name__}: {e}); fix the arguments '
        f'to match the signature of optax.{name}.') from None
  return schedule


def _parse_term(raw: Any, where: str) -> dict[str, Any]:
  """Normalises one config entry to a dict with the keys of `_TERM_KEYS`."""
  if isinstance(raw, (tuple, list)):
    if len(raw) not in (2, 3):
      raise errors.ConfigError(
          f'{where}={raw!r} must be (name, weight) or (name, weight, kwargs); got {len(raw)} items.')
    return dict(zip(('name', 'weight', 'kwargs'), raw))
  spec = _as_dict(raw)
  if spec is None:
    raise errors.ConfigError(
        f"{where}={raw!r} is not a loss term; use ('kd', 1.0), ('kd', 1.0, {{'temperature': 4.0}}) or "
        f"{{'name': 'kd', 'weight': 1.0}}.")
  unknown = sorted(set(spec) - set(_TERM_KEYS))
  if unknown:
    raise errors.ConfigError(
        f'{where} has unknown key(s) {", ".join(unknown)}; valid keys: {", ".join(_TERM_KEYS)}.')
  for required in ('name', 'weight'):
    if required not in spec:
      raise errors.ConfigError(f"{where} has no '{required}'; every loss term needs a name and a weight.")
  return spec


def _unique_label(label: str, taken: set[str]) -> str:
  if label not in taken:
    return label
  i = 1
  while f'{label}_{i}' in taken:
    i += 1
  return f'{label}_{i}'


def _term_kwargs(spec: Mapping[str, Any], loss: registry.LossDef,
                 run_values: Mapping[str, Any] | None, where: str, context: str) -> dict[str, Any]:
  """The term's hyperparameters: the run's values the loss takes, overridden by the config's."""
  name = spec['name']
  kwargs = _as_dict(spec.get('kwargs') or {})
  if kwargs is None:
    raise errors.ConfigError(f"{where}.kwargs={spec['kwargs']!r} must be a mapping of hyperparameters.")
  valid = loss.hyperparameters
  kwargs = {**{k: v for k, v in (run_values or {}).items() if k in valid}, **kwargs}
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise errors.ConfigError(
        f"{context}: unknown kwarg(s) {', '.join(unknown)} for loss '{name}'; valid kwargs: "
        f"{', '.join(valid) if valid else 'none (it takes no hyperparameters)'}.")
  missing = sorted(k for k, default in valid.items()
                   if default is inspect.Parameter.empty and k not in kwargs)
  if missing:
    raise errors.ConfigError(
        f"{context}: loss '{name}' needs the hyperparameter(s) {', '.join(missing)}, which have no "
        f"default; add them, e.g. kwargs={{{', '.join(repr(m) + ': ...' for m in missing)}}}.")
  return kwargs


def _term_inputs(spec: Mapping[str, Any], loss: registry.LossDef, where: str, context: str
                 ) -> tuple[tuple[str, str], ...]:
  """(role, outputs key) per positional input: the `inputs` remap, else the role at the `layer`."""
  name = spec['name']
  mapping = _as_dict(spec.get('inputs') or {})
  if mapping is None:
    raise errors.ConfigError(f"{where}.inputs={spec['inputs']!r} must map roles to outputs-dict keys.")
  bad_roles = sorted(set(mapping) - set(loss.roles))
  if bad_roles:
    raise errors.ConfigError(
        f"{context}: inputs has unknown role(s) {', '.join(bad_roles)} for loss '{name}'; "
        f"its roles are: {', '.join(loss.roles)}.")
  for role, key in mapping.items():
    if not isinstance(key, str):
      raise errors.ConfigError(f"{where}.inputs['{role}']={key!r} must be an outputs-dict key (a string).")
  try:
    return tuple((role, mapping.get(role) or keys.for_role(role, spec.get('layer')))
                 for role in loss.roles)
  except errors.ConfigError as e:
    raise errors.ConfigError(f"{context[:-1]}, loss '{name}'): {e}") from None


def compose(terms: Iterable[Any], *, field: str = 'config.losses',
            run_values: Mapping[str, Any] | None = None) -> Composite:
  """Builds a `Composite` from config terms (see the module docstring for the accepted forms).

  Args:
    terms: sequence of `(name, weight[, kwargs])` tuples and/or term mappings / ConfigDicts.
    field: the config field the terms come from, used in error messages.
    run_values: hyperparameters only the run knows (e.g. CRD's `num_data`, the training-set size);
      a loss that takes one of them gets it unless the term sets it.

  Raises:
    ConfigError: empty list, unknown loss name, unknown kwarg, bad weight or schedule, unknown role in
      `inputs`, or a malformed term — each message names the term and the fix.
  """
  if terms is None or isinstance(terms, (str, bytes)) or _as_dict(terms) is not None:
    raise errors.ConfigError(f"{field} must be a list of loss terms, e.g. [('ce', 1.0)]; got {terms!r}.")
  built: list[Term] = []
  taken: set[str] = set()
  for i, raw in enumerate(terms):
    where = f'{field}[{i}]'
    spec = _parse_term(raw, where)
    name = spec['name']
    loss = registry.get(name)
    # A loss named by import path ('pkg.mod:fn') is labelled by its function name.
    label = spec.get('label') or str(name).rpartition(':')[2]
    if not isinstance(label, str):
      raise errors.ConfigError(f'{where}.label={label!r} must be a string.')
    label = _unique_label(label, taken)
    taken.add(label)
    context = f"{where} ('{label}')"
    built.append(Term(
        label=label, name=name, loss=loss, weight=_build_weight(spec['weight'], where),
        kwargs=types.MappingProxyType(_term_kwargs(spec, loss, run_values, where, context)),
        inputs=_term_inputs(spec, loss, where, context), where=where))
  if not built:
    raise errors.ConfigError(f"{field} is empty; add at least one loss term, e.g. [('ce', 1.0)].")
  return Composite(terms=tuple(built))
