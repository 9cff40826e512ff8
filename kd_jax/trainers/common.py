"""The start every trainer shares: check the config, make the workdir and mesh, open the data."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from kd_jax import config_utils, data, errors, parallel
from kd_jax.checkpoint import ensure_workdir
from kd_jax.trainers.feature_plan import ADAPTED, FeaturePlan, first
from kd_jax.types import Array, PyTree


@dataclasses.dataclass
class RunSetup:
  mesh: jax.sharding.Mesh
  train_source: Any
  eval_source: Any | None
  image_shape: tuple[int, ...]


def prepare(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict, workdir: str,
            *, with_eval: bool) -> RunSetup:
  """Fails fast on bad fields, workdir or batch sizes, then opens the train (and eval) split."""
  config_utils.check_fields(config, defaults)
  ensure_workdir(workdir)
  mesh = parallel.make_mesh()
  parallel.check_global_batch(config.data.batch_size, mesh, 'config.data.batch_size')
  if with_eval and 'eval_batch_size' in config.data:
    parallel.check_global_batch(config.data.eval_batch_size, mesh, 'config.data.eval_batch_size')
  data_dir = config.data.data_dir or None
  train_src = data.get_source(config.data.name, config.data.train_split, data_dir=data_dir,
                              cache_in_memory=config.data.cache_in_memory)
  eval_src = (data.get_source(config.data.name, config.data.eval_split, data_dir=data_dir,
                              cache_in_memory=config.data.cache_in_memory) if with_eval else None)
  image_shape = tuple(np.asarray(train_src[0]['image']).shape)
  return RunSetup(mesh, train_src, eval_src, image_shape)


def train_batches(config: ml_collections.ConfigDict, source: Any) -> Any:
  """This process's slice of every global batch, in the seed's order (see kd_jax.data)."""
  return data.train_iterator(source, global_batch_size=config.data.batch_size, seed=config.seed,
                             process_index=jax.process_index(), process_count=jax.process_count())


def feature_shapes(module: nn.Module, variables: PyTree, x: Array, paths: Sequence[str],
                   **call_kwargs: Any) -> dict[str, tuple[int, ...]]:
  """Shapes of the features at `paths` (abstractly: nothing runs); a bad path raises ConfigError."""
  from kd_jax.models import features as features_lib  # pylint: disable=import-outside-toplevel
  if not paths:
    return {}
  feats = jax.eval_shape(lambda v: features_lib.apply_with_features(
      module, v, x, list(paths), train=False, **call_kwargs)[1], variables)
  return {p: tuple(first(f).shape) for p, f in feats.items()}


def student_losses_teacher(config: ml_collections.ConfigDict, *, role: str,
                           example: Array) -> tuple[nn.Module, Any, FeaturePlan, Any]:
  """The student module, the loss composite, its feature plan and the frozen teacher (or None).

  A loss mix that reads teacher outputs without `config.teacher.checkpoint` is a config error.
  """
  from kd_jax import losses, models  # pylint: disable=import-outside-toplevel
  name, kwargs = config_utils.model_kwargs(config.model, 'config.model')
  student = models.get(name, **kwargs)
  composite = losses.compose(config.losses)
  plan = FeaturePlan.from_keys(composite.required_keys)
  teacher = None
  if config.teacher.checkpoint:
    teacher = _restore(config.teacher.checkpoint, config.teacher.model, role, example,
                       'config.teacher')
  elif any(k.startswith(('teacher', ADAPTED)) for k in composite.required_keys):
    raise errors.ConfigError(
        f'config.losses reads teacher outputs ({sorted(composite.required_keys)}) but '
        'config.teacher.checkpoint is empty; set it to the --workdir of a trained teacher run.')
  return student, composite, plan, teacher


def restore_teachers(config: ml_collections.ConfigDict, *, role: str, example: Array) -> list[Any]:
  """The frozen teachers: `config.teacher` (one) or `config.teachers` (several), each its own pytree.

  `config.teachers` is a list of `{'checkpoint': <workdir>, 'model': {...} (optional)}`; setting both
  it and `config.teacher.checkpoint` is a config error (which one would `teacher_logits` mean?).
  """
  many = list(config.get('teachers') or [])
  if many and config.teacher.checkpoint:
    raise errors.ConfigError(
        'both config.teacher.checkpoint and config.teachers are set; use config.teacher for one '
        'teacher or config.teachers for several, not both.')
  if not many:
    return ([_restore(config.teacher.checkpoint, config.teacher.model, role, example,
                      'config.teacher')] if config.teacher.checkpoint else [])
  out = []
  for i, raw in enumerate(many):
    spec = config_utils.to_dict(raw)
    where = f'config.teachers[{i}]'
    if not isinstance(spec, dict) or not spec.get('checkpoint') or set(spec) - {'checkpoint', 'model'}:
      raise errors.ConfigError(
          f"{where}={raw!r} must be {{'checkpoint': <a trained teacher's --workdir>, 'model': {{...}} "
          '(optional)}.')
    out.append(_restore(spec['checkpoint'], spec.get('model') or {}, role, example, where))
  return out


def _restore(checkpoint: str, model_cfg: Any, role: str, example: Array, field: str) -> Any:
  """One frozen teacher of `role`, its shapes taken from `example` in inference mode."""
  from kd_jax import teacher as teacher_lib  # pylint: disable=import-outside-toplevel
  return teacher_lib.restore_teacher(checkpoint, model_cfg, role=role, init_args=(example,),
                                     init_kwargs={'train': False}, field=field)
