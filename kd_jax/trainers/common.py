"""The trainer boundary every trainer shares: config schema pieces, checks, workdir, mesh, data, teachers.

Configs are read here and in each trainer's `train_and_evaluate`; below (models, losses, data,
metrics, parallel, the distillation core) only plain values travel, and errors raised there get the
config field prefixed by `config_utils.field_context`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, data, errors, keys, parallel
from kd_jax import teacher as teacher_lib
from kd_jax.checkpoint import ensure_workdir
from kd_jax.distill import core
from kd_jax.metrics import cost
from kd_jax.types import Array, PyTree


def data_config(**fields: Any) -> ml_collections.ConfigDict:
  """The data fields every trainer has, plus the trainer's own (`fields`)."""
  return ml_collections.ConfigDict({**dict(name='fashion_mnist', data_dir='', batch_size=128,
                                           cache_in_memory=True, train_split='train',
                                           eval_split='test', pad_to=0), **fields})


def teacher_config() -> ml_collections.ConfigDict:
  """`checkpoint`: a trained run's --workdir; `model`: its model config (empty: the saved one)."""
  return ml_collections.ConfigDict(dict(checkpoint='', model={}))


@dataclasses.dataclass
class RunSetup:
  mesh: jax.sharding.Mesh
  train_source: Any
  eval_source: Any | None
  image_shape: tuple[int, ...]


# Counts that must be positive integers wherever a trainer has them (a zero or negative value would
# fail deep inside a split, a range or a metric).
POSITIVE_COUNTS = ('eval.batch_size', 'eval.num_samples', 'eval.num_pairs', 'eval.grid_size')


def prepare(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict, workdir: str,
            *, with_eval: bool) -> RunSetup:
  """Fails fast on bad fields, workdir, batch sizes, counts or an end-of-run classifier checkpoint,
  then opens the train (and eval) split."""
  config_utils.check_fields(config, defaults)
  check_positive_counts(config)
  model_axis = config.mesh.model if 'mesh' in config else 1
  mesh = parallel.make_mesh() if model_axis == 1 else parallel.make_mesh(model=model_axis)
  sizes = ['batch_size'] + (['eval_batch_size'] if with_eval and 'eval_batch_size' in config.data
                            else [])
  for name in sizes:
    with config_utils.field_context(f'config.data.{name}'):
      parallel.check_global_batch(config.data[name], mesh)
  # A missing or unfinished teacher run is named now, not after the data is opened (JSON only).
  for where, checkpoint in teacher_checkpoints(config):
    ckpt_lib.read_meta(checkpoint, where)
  ensure_workdir(workdir)
  splits = [config.data.train_split] + ([config.data.eval_split] if with_eval else [])
  with config_utils.field_context('config.data'):
    sources = [data.get_source(config.data.name, split, data_dir=config.data.data_dir or None,
                               cache_in_memory=config.data.cache_in_memory) for split in splits]
    if config.data.get('pad_to'):
      sources = [data.sources.pad_source(s, int(config.data.pad_to)) for s in sources]
  image_shape = tuple(np.asarray(sources[0][0]['image']).shape)
  ev = config.get('eval')
  if ev is not None and ev.get('classifier_checkpoint') and not ev.get('feature_fn'):
    # Restored only after training (for FID/KID/PR): check its kind and layer now.
    from kd_jax.trainers import gen_eval  # pylint: disable=import-outside-toplevel
    gen_eval.check_classifier(ev.classifier_checkpoint, ev.feature_layer, image_shape,
                              int(ev.get('feature_crop', 0) or 0))
  return RunSetup(mesh, sources[0], sources[1] if with_eval else None, image_shape)


def teacher_checkpoints(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(config field, path) of every teacher checkpoint the config names; malformed entries are left
  to `restore_teachers`, which explains the expected form.

  Raises:
    ConfigError: both `config.teacher.checkpoint` and `config.teachers` are set.
  """
  out = []
  teacher = config.get('teacher')
  if teacher is not None and teacher.get('checkpoint'):
    out.append(('config.teacher.checkpoint', teacher.checkpoint))
  many = config.get('teachers') or []
  if out and many:
    raise errors.ConfigError(
        'both config.teacher.checkpoint and config.teachers are set; use config.teacher for one '
        'teacher or config.teachers for several, not both.')
  for i, spec in enumerate(many):
    if isinstance(spec, Mapping) and isinstance(spec.get('checkpoint'), str) and spec['checkpoint']:
      out.append((f'config.teachers[{i}].checkpoint', spec['checkpoint']))
  return out


def check_positive_counts(config: ml_collections.ConfigDict) -> None:
  """ConfigError for a `POSITIVE_COUNTS` field of `config` that is not a positive integer."""
  for dotted in POSITIVE_COUNTS:
    group, name = dotted.split('.')
    if group in config and name in config[group]:
      config_utils.check_count(config[group][name], f'config.{dotted}')


def train_batches(config: ml_collections.ConfigDict, source: Any,
                  keys_read: Sequence[str] = ('image', 'label')) -> Any:
  """This process's slice of every global batch, in the seed's order (see kd_jax.data)."""
  return data.train_iterator(source, global_batch_size=config.data.batch_size, seed=config.seed,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             keys=tuple(keys_read))


def restore_teachers(config: ml_collections.ConfigDict, *, role: str, example: Array,
                     **call_kwargs: Any) -> list[teacher_lib.Teacher]:
  """The frozen teachers: `config.teacher` (one) or `config.teachers` (several), each its own pytree.

  `config.teachers` is a list of `{'checkpoint': <workdir>, 'model': {...} (optional)}`; setting both
  it and `config.teacher.checkpoint` is a config error (which one would `teacher_logits` mean?).
  """
  many = list(config.get('teachers') or [])
  teacher_checkpoints(config)  # refuses both forms at once
  specs = [(config_utils.to_dict(config.teacher), 'config.teacher')] if config.teacher.checkpoint \
      else [(config_utils.to_dict(raw), f'config.teachers[{i}]') for i, raw in enumerate(many)]
  out = []
  for spec, where in specs:
    if not isinstance(spec, dict) or not spec.get('checkpoint') or set(spec) - {'checkpoint', 'model'}:
      raise errors.ConfigError(
          f"{where}={spec!r} must be {{'checkpoint': <a trained teacher's --workdir>, 'model': {{...}} "
          '(optional)}.')
    out.append(teacher_lib.restore_teacher(spec['checkpoint'], spec.get('model') or {}, role=role,
                                           init_args=(example,),
                                           init_kwargs={'train': False, **call_kwargs},
                                           field=where))
  return out


def restore_critic(checkpoint: str, field: str, *, role: str, layers: Sequence[str],
                   required: Iterable[str], example: Array, labels: Array | None = None
                   ) -> tuple[Any, Any]:
  """A frozen critic network (a GAN's D, a classifier) for the `frozen_*` keys, and its variables.

  `labels` is passed to a critic that reads them (a conditional D); `layers` are the module paths of
  `frozen_*_features` (required when a term reads them).
  """
  if not layers and any('features' in k or 'embedding' in k for k in required
                        if k.startswith('frozen_')):
    raise errors.ConfigError('config.losses reads frozen features but config.frozen_net.layers '
                             "is empty; list module paths, e.g. ['block0', 'block1'].")
  kw = {} if labels is None else {'labels': labels}
  net = teacher_lib.restore_teacher(checkpoint, {}, role=role, init_args=(example,),
                                    init_kwargs={'train': False, **kw}, field=field)
  critic = core.Critic(net.module, tuple(layers), takes_labels=labels is not None)
  with config_utils.field_context('config.frozen_net.layers'):
    jax.eval_shape(lambda v: critic.outputs('student', v, example, labels), net.variables)
  return critic, core.Frozen(net.module, net.variables)


def check_teacher_resolution(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                             verb: str) -> None:
  """CheckpointError when `config.teacher.checkpoint`'s run (generating or denoising: `verb`)
  saw images of another shape than `config.data`'s (reads only the run's JSON meta)."""
  shape = ckpt_lib.read_meta(config.teacher.checkpoint,
                             'config.teacher.checkpoint')[2].get('image_shape')
  if shape and tuple(shape) != image_shape:
    raise errors.CheckpointError(
        f'config.teacher.checkpoint {verb} {tuple(shape)} images but config.data.name='
        f'{config.data.name!r} has {image_shape}; use a teacher trained at this resolution.')


def checkpoints_of(config: ml_collections.ConfigDict) -> list[str]:
  """The teachers' checkpoints, in `restore_teachers` order (for the summary)."""
  return [path for _, path in teacher_checkpoints(config)]


def check_keys(required: Iterable[str], offered: Sequence[str], trainer: str,
               num_teachers: int) -> list[keys.Key]:
  """The loss terms' keys, parsed; ConfigError for a key the trainer lacks or a missing teacher."""
  with config_utils.field_context('config.losses'):
    parsed = keys.check_offered(required, offered, trainer)
  reads = sorted(str(k) for k in parsed if k.reads_teacher)
  if reads and not num_teachers:
    raise errors.ConfigError(
        f'config.losses reads teacher outputs ({reads}) but no teacher is set; set '
        'config.teacher.checkpoint (or config.teachers) to the --workdir of a trained teacher run.')
  return parsed


def cost_entry(apply_fn: Callable[..., Array], variables: PyTree, *example: Array,
               **fields: Any) -> dict[str, Any]:
  """Params and FLOPs per example of one network, with descriptive `fields` (model, checkpoint)."""
  return {**fields, 'params': cost.param_count(variables['params']),
          'flops_per_example': cost.flops(apply_fn, variables, *example)}


def split_labels(source: Any) -> Any:
  """Every label of a split, in record order (an in-memory split has them as one array)."""
  arrays = getattr(source, 'arrays', None)
  if arrays is not None and 'label' in arrays:
    return arrays['label']
  return [int(source[i]['label']) for i in range(len(source))]
