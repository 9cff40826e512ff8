"""The distillation core every distilling trainer is a spec on.

Given the student module, the frozen teachers (module + variables), an optional frozen critic and the
keys the loss terms read, `build` plans which intermediate features to capture, checks them, and
sizes the trainable extras (adapters, VID, CRD: one layout, `params['extras'][<extra>]`). The
`Distiller` then computes, inside a jitted step:

  teacher_outputs   the teachers' outputs and features (and the critic on their images) under
                    `stop_gradient`: nothing flows back into a teacher;
  student_outputs   the student's outputs and features, the extras on them, the critic on the
                    student's images: the outputs dict the composed loss reads (`kd_jax.keys`).

The teacher pytree is `{'teachers': (variables_0, ...), 'critic': variables}`: an argument of every
step, never given to an optimizer, never checkpointed.

Mixed precision (`compute_dtype=jnp.bfloat16`): the student's and the teachers' params and inputs
are cast to bfloat16 at the call, so convolutions and matmuls run in bfloat16, while the params,
optimizer state and BatchNorm statistics stay float32 and every output (logits, features, images)
is cast back to float32 before a loss sees it: losses, their reductions and the gradient update are
float32 (the cast's gradient returns float32 gradients to float32 params).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import errors, keys
from kd_jax.distill import heads
from kd_jax.distill.crd import CRD
from kd_jax.models import features as features_lib
from kd_jax.types import Array, PyTree


@dataclasses.dataclass(frozen=True, eq=False)
class Frozen:
  """A frozen network: its module and variables (a restored `kd_jax.teacher.Teacher` fits)."""
  module: nn.Module
  variables: PyTree


@dataclasses.dataclass(frozen=True, eq=False)
class Critic:
  """A frozen network applied to the student's and the teacher's images (a GAN's D, a classifier):
  keys `frozen_<who>_logits`, `frozen_<who>_features` (list, one map per layer, in `layers` order)
  and `frozen_<who>_embedding` (the last layer spatially pooled)."""
  module: nn.Module
  layers: tuple[str, ...] = ()
  takes_labels: bool = False

  def outputs(self, who: str, variables: PyTree, images: Array, labels: Array | None
              ) -> dict[str, Any]:
    kw = {'labels': labels} if self.takes_labels else {}
    logits, feats, _ = features_lib.apply_with_features(self.module, variables, images,
                                                        self.layers, train=False, **kw)
    out: dict[str, Any] = {f'frozen_{who}_logits': logits}
    if self.layers:
      maps = [feats[p] for p in sorted(self.layers)]
      out[f'frozen_{who}_features'] = maps
      last = maps[-1]
      out[f'frozen_{who}_embedding'] = (last.reshape(last.shape[0], -1, last.shape[-1]).mean(1)
                                        if last.ndim == 4 else last)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Distiller:
  """Built by `build`; hashable by identity, so a step may close over it or take it static."""
  student: nn.Module
  teachers: tuple[nn.Module, ...]
  output: str                              # what the models return: 'logits' or 'images'
  student_paths: tuple[str, ...]
  teacher_paths: tuple[tuple[str, ...], ...]  # per teacher
  indexed: tuple[tuple[int, str], ...]     # (teacher, path) read as teacher<i>_features/<path>
  extras: tuple[Any, ...]                  # heads.Adapters, heads.VID, crd.CRD
  critic: Critic | None = None
  teacher_feature_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # teacher 0's, batch 1
  compute_dtype: Any = None                # None: float32; jnp.bfloat16: mixed precision

  def _cast_in(self, variables: PyTree, x: Array) -> tuple[PyTree, Array]:
    if self.compute_dtype is None:
      return variables, x
    return ({**variables, 'params': _cast(variables['params'], self.compute_dtype)},
            _cast(x, self.compute_dtype))

  def init(self, rng: Array, x: Array, *, student_rngs: Any = None, **call_kwargs: Any
           ) -> tuple[PyTree, PyTree]:
    """(params, model_state), each `{'student': ..., 'extras': {name: ...}}`; `x` an example."""
    variables = dict(self.student.init(rng if student_rngs is None else student_rngs, x,
                                       train=False, **call_kwargs))
    params = {'student': variables.pop('params'), 'extras': {}}
    state = {'student': variables, 'extras': {}}
    if self.extras:
      _, s_feats, _ = features_lib.apply_with_features(
          self.student, {'params': params['student'], **variables}, x, self.student_paths,
          train=False, rngs=student_rngs, **call_kwargs)
      t_feats = {p: jnp.zeros(s, jnp.float32) for p, s in self._teacher_shapes.items()}
      for i, extra in enumerate(self.extras):
        params['extras'][extra.name], state['extras'][extra.name] = extra.init(
            jax.random.fold_in(rng, 1 + i), s_feats, t_feats)
    return params, state

  def teacher_tree(self, teachers: Sequence[Frozen], critic: Frozen | None = None) -> PyTree:
    return {'teachers': tuple(t.variables for t in teachers),
            'critic': critic.variables if critic is not None else {}}

  def teacher_outputs(self, tree: PyTree, x: Array, *, rngs: Any = None,
                      **call_kwargs: Any) -> dict[str, Any]:
    """The frozen teachers' outputs on `x` (and the critic on their images), as constants."""
    out: dict[str, Any] = {}
    results = []
    for i, (module, variables) in enumerate(zip(self.teachers, tree['teachers'])):
      variables, xc = self._cast_in(variables, x)
      y, feats, _ = features_lib.apply_with_features(module, variables, xc, self.teacher_paths[i],
                                                     train=False, rngs=rngs, **call_kwargs)
      y, feats = _cast(y, jnp.float32), _cast(feats, jnp.float32)
      results.append(y)
      out[f'teacher{i}_{self.output}'] = y
      if i == 0:
        out.update({f'{keys.TEACHER_FEATURES}/{p}': f for p, f in feats.items()})
      out.update({f'teacher{j}_features/{p}': feats[p] for j, p in self.indexed if j == i})
    if results:
      # Several teachers: averaged targets (the mean of their outputs).
      out[f'teacher_{self.output}'] = (results[0] if len(results) == 1
                                       else jnp.mean(jnp.stack(results), axis=0))
      if self.critic is not None:
        out.update(self.critic.outputs('teacher', tree['critic'], out['teacher_images'],
                                       call_kwargs.get('labels')))
    return jax.lax.stop_gradient(out)

  def student_outputs(self, params: PyTree, state: PyTree, x: Array, teacher_out: Mapping[str, Any],
                      *, tree: PyTree, train: bool, rngs: Any = None, extras_rng: Array | None = None,
                      batch: Mapping[str, Array] | None = None, **call_kwargs: Any
                      ) -> tuple[dict[str, Any], PyTree]:
    """The outputs dict of the student on `x` (with the extras and the critic) and the new state."""
    variables, xc = self._cast_in({'params': params['student'], **state['student']}, x)
    y, feats, new_s = features_lib.apply_with_features(
        self.student, variables, xc, self.student_paths,
        train=train, mutable=list(state['student']), rngs=rngs, **call_kwargs)
    if self.compute_dtype is not None:
      y, feats = _cast(y, jnp.float32), _cast(feats, jnp.float32)
      # Statistics (BatchNorm) keep the dtype they are stored in.
      new_s = jax.tree.map(lambda n, o: n.astype(o.dtype), dict(new_s), dict(state['student']))
    out: dict[str, Any] = {f'student_{self.output}': y,
                           **{f'{keys.STUDENT_FEATURES}/{p}': f for p, f in feats.items()}}
    t_feats = {p: teacher_out[f'{keys.TEACHER_FEATURES}/{p}'] for p in self._teacher_shapes}
    new_extras = {}
    for extra in self.extras:
      values, new_extras[extra.name] = extra.apply(
          params['extras'][extra.name], state['extras'][extra.name], feats, t_feats, train=train,
          batch=batch, rng=extras_rng)
      out.update(values)
    if self.critic is not None:
      out.update(self.critic.outputs('student', tree['critic'], y, call_kwargs.get('labels')))
    return out, {'student': dict(new_s), 'extras': new_extras}

  @property
  def _teacher_shapes(self) -> dict[str, tuple[int, ...]]:
    return dict(self.teacher_feature_shapes)


def _with_dtype(module: nn.Module, dtype: Any) -> nn.Module:
  """The module computing in `dtype` when it has kd_jax's `dtype` field (its layers then run in
  it, params stay float32); other modules get bfloat16 params and inputs at the call instead."""
  if any(f.name == 'dtype' for f in dataclasses.fields(module)):
    return module.clone(dtype=dtype)
  return module


def _cast(tree: Any, dtype: Any) -> Any:
  """Floating leaves of `tree` to `dtype` (integer leaves, e.g. labels or counters, unchanged)."""
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                      tree)


def _shapes(module: nn.Module, variables: PyTree, x: Array, paths: Sequence[str],
            rngs: Any, call_kwargs: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Shapes of the features at `paths` (abstractly: nothing runs); a bad path raises ConfigError."""
  if not paths:
    return {}
  feats = jax.eval_shape(lambda v: features_lib.apply_with_features(
      module, v, x, list(paths), train=False, rngs=rngs, **call_kwargs)[1], variables)
  return {p: tuple(f.shape) for p, f in feats.items()}


def build(student: nn.Module, teachers: Sequence[Frozen], required: Iterable[str], *, output: str,
          example: Array, call_kwargs: Mapping[str, Any] | None = None, student_rngs: Any = None,
          adapter: str = 'conv1x1', crd: CRD | None = None, critic: Critic | None = None,
          compute_dtype: Any = None) -> Distiller:
  """Plans features and extras for the loss keys `required`; checks paths and shapes abstractly.

  Args:
    student: the student module; `teachers`: the frozen teachers (first = the one un-indexed
      `teacher_*` keys, adapters and VID read).
    required: every outputs key the loss terms read (`Composite.required_keys`).
    output: what the models' `__call__` returns, 'logits' or 'images' (keys `student_<output>`).
    example: an example input (shapes only); `call_kwargs`: further call arguments (labels=...).
    adapter: 'conv1x1' or 'conv_bn_relu' (`heads.ConvReg`).
    crd: the CRD extra when a term reads its scores; `critic`: for `frozen_*` keys.
    compute_dtype: None (float32) or jnp.bfloat16 (mixed precision; see the module docstring).

  Raises:
    ConfigError: a bad module path, a teacher index out of range, shapes an adapter cannot map.
  """
  kw = dict(call_kwargs or {})
  if compute_dtype is not None:
    student = _with_dtype(student, compute_dtype)
    teachers = [Frozen(_with_dtype(t.module, compute_dtype), t.variables) for t in teachers]
  parsed = [keys.parse(k) for k in sorted(required)]
  if adapter not in heads.ADAPTER_KINDS:
    raise errors.ConfigError(f"adapter {adapter!r}; use one of {', '.join(heads.ADAPTER_KINDS)}.")
  for k in parsed:
    if k.index is not None and k.index >= len(teachers):
      raise errors.ConfigError(
          f"the loss terms read '{k}' but only {len(teachers)} teacher(s) are given (indices "
          f'0..{len(teachers) - 1}).')
  pairs = {f: tuple(sorted({(k.student, k.teacher) for k in parsed if k.family in fams}))
           for f, fams in (('adapted', (keys.ADAPTED,)),
                           ('vid', (keys.VID_MEAN, keys.VID_LOG_VARIANCE)))}
  s_paths = {k.student for k in parsed if k.student}
  t_paths = {k.teacher for k in parsed if k.teacher and k.index is None}
  indexed = tuple(sorted({(k.index, k.teacher) for k in parsed
                          if k.family == keys.TEACHER_FEATURES and k.index is not None}))
  if crd is not None:
    s_paths.add(crd.student_feature)
    t_paths.add(crd.teacher_feature)
  s_paths, t_paths = tuple(sorted(s_paths)), tuple(sorted(t_paths))
  s_vars = jax.eval_shape(lambda: student.init(
      jax.random.key(0) if student_rngs is None else student_rngs, example, train=False, **kw))
  s_shapes = _shapes(student, s_vars, example, s_paths, student_rngs, kw)
  t_shapes = _shapes(teachers[0].module, teachers[0].variables, example, t_paths, student_rngs,
                     kw) if teachers else {}
  per_teacher = [tuple(sorted(set(t_paths if i == 0 else ()) | {p for j, p in indexed if j == i}))
                 for i in range(len(teachers))]
  for i, t in enumerate(teachers[1:], 1):
    _shapes(t.module, t.variables, example, per_teacher[i], student_rngs, kw)
  for pair in pairs['adapted']:
    heads.check_adapter(pair, s_shapes[pair[0]], t_shapes[pair[1]], adapter)
  extras: list[Any] = []
  if pairs['adapted']:
    extras.append(heads.Adapters(pairs['adapted'], tuple(t_shapes[t][1:] for _, t in
                                                         pairs['adapted']), adapter))
  if pairs['vid']:
    extras.append(heads.VID(pairs['vid'], tuple(t_shapes[t][1:] for _, t in pairs['vid'])))
  if crd is not None:
    extras.append(crd)
  return Distiller(student, tuple(t.module for t in teachers), output, s_paths, tuple(per_teacher),
                   indexed, tuple(extras), critic, tuple(sorted(t_shapes.items())), compute_dtype)
