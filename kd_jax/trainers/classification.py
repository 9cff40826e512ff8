"""Classifier training: supervised teachers, scratch students and distilled students, one trainer.

With no teacher configured this trains on labels alone (a teacher or a scratch student); with
`config.teacher.checkpoint` (or several `config.teachers`) the restored teachers are frozen and their
outputs feed the configured loss terms. Options for the loss-library methods:

  stages            consecutive step ranges with their own loss mix and optimizer (`stages.py`)
  teachers          several frozen teachers: `teacher<i>_logits`, `teacher<i>_features/<p>`, and
                    `teacher_logits` = their mean logits (averaged targets); `teacher_features/<p>`,
                    adapters and VID read the first teacher
  crd               CRD's embeddings (extras) and memory bank (extras_state), addressed by the
                    record index of each training example
  data.mixup_alpha  function matching (Beyer et al. 2022): the same mixed-up batch goes to teacher
                    and student; no label terms allowed then

The train step is `(state, teachers, batch, rng) -> (state, metrics)`: pure, jitted by the shared
loop with the state donated, batch sharded over the mesh's `data` axis, everything else replicated.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from kd_jax import config_utils, data, errors, models, optim, parallel
from kd_jax.data import augment
from kd_jax.losses import contrast
from kd_jax.metrics import classification as cls_metrics
from kd_jax.metrics import cost
from kd_jax.models import features as features_lib
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, extras as extras_lib, feature_plan, loop, stages as stages_lib
from kd_jax.trainers.feature_plan import STUDENT, TEACHER, FeaturePlan, first
from kd_jax.types import Array, Batch, PyTree

_CRD_KEYS = ('crd_student_scores', 'crd_teacher_scores', 'crd_num_data')
CRD_NEGATIVES = ('other_class', 'uniform')


def default_config() -> ml_collections.ConfigDict:
  """Every field a classification config may set (configs start from this)."""
  c = ml_collections.ConfigDict()
  c.trainer = 'classification'
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', batch_size=128, eval_batch_size=1000,
      cache_in_memory=True, augment=True, crop_padding=2, flip=True, train_split='train',
      eval_split='test', mixup_alpha=0.0))
  c.model = {'name': 'small_cnn', 'num_classes': 10}
  c.teacher = ml_collections.ConfigDict(dict(checkpoint='', model={}))
  c.teachers = []
  c.losses = [('ce', 1.0, {})]
  c.stages = []
  # CRD (Tian et al. 2020); defaults are the reference's (feat_dim, nce_k, nce_t, nce_m).
  c.crd = ml_collections.ConfigDict(dict(
      student_feature='', teacher_feature='', feat_dim=128, num_negatives=16384,
      temperature=0.07, momentum=0.5, negatives='other_class'))
  c.optimizer = optim.default_optimizer_config()
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 0
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  return c


def _check_keys(config: ml_collections.ConfigDict, keys: frozenset[str], num_teachers: int,
                num_records: int) -> None:
  """Fails before training when the loss mix reads something this run cannot produce."""
  reads_teacher = [k for k in keys if k.startswith(('teacher', feature_plan.ADAPTED,
                                                    feature_plan.VID_MEAN, 'crd_'))]
  if reads_teacher and not num_teachers:
    raise errors.ConfigError(
        f'config.losses reads teacher outputs ({sorted(reads_teacher)}) but no teacher is set; set '
        'config.teacher.checkpoint (or config.teachers) to the --workdir of a trained teacher run.')
  for key in keys:
    if key.startswith('teacher') and key[7:8].isdigit():
      index = int(key[7:].split('_', 1)[0])
      if index >= num_teachers:
        raise errors.ConfigError(
            f"config.losses reads '{key}' but only {num_teachers} teacher(s) are configured "
            f'(indices 0..{num_teachers - 1}); add teachers to config.teachers or fix the index.')
  if 'labels' in keys and config.data.mixup_alpha:
    raise errors.ConfigError(
        f'config.data.mixup_alpha={config.data.mixup_alpha} mixes images, so label terms are '
        "undefined; drop the terms reading 'labels' (function matching learns from the teacher "
        'alone) or set config.data.mixup_alpha=0.')
  if any(k in keys for k in _CRD_KEYS):
    if not (config.crd.student_feature and config.crd.teacher_feature):
      raise errors.ConfigError(
          "loss 'crd' needs config.crd.student_feature and config.crd.teacher_feature (the module "
          "paths it embeds, e.g. 'features' for both: the pooled penultimate features).")
    contrast.check_num_negatives(int(config.crd.num_negatives), num_records,
                                 'config.crd.num_negatives')
    if config.crd.negatives not in CRD_NEGATIVES:
      raise errors.ConfigError(
          f'config.crd.negatives={config.crd.negatives!r}; use one of {", ".join(CRD_NEGATIVES)} '
          "('other_class': the reference's CIFAR-100 sampler; 'uniform': any memory row).")


def _all_labels(source: Any) -> Any:
  """Every training label, in record order (an in-memory split has them as one array)."""
  arrays = getattr(source, 'arrays', None)
  if arrays is not None and 'label' in arrays:
    return arrays['label']
  return [int(source[i]['label']) for i in range(len(source))]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a classifier (optionally distilling frozen teachers) and evaluates it; see module doc."""
  run = common.prepare(config, default_config(), workdir, with_eval=True)
  mesh, train_src, eval_src, image_shape = (run.mesh, run.train_source, run.eval_source,
                                            run.image_shape)
  example = jnp.zeros((1, *image_shape), jnp.float32)
  name, kwargs = config_utils.model_kwargs(config.model, 'config.model')
  student = models.get(name, **kwargs)
  stage_list = stages_lib.build(config)
  keys = stages_lib.required_keys(stage_list)
  teachers = common.restore_teachers(config, role='model', example=example)
  _check_keys(config, keys, len(teachers), len(train_src))
  use_crd = any(k in keys for k in _CRD_KEYS)
  plan = FeaturePlan.from_keys(keys)
  s_paths = set(plan.student_paths)
  t_paths = set(plan.teacher_paths)
  if use_crd:
    s_paths.add(config.crd.student_feature)
    t_paths.add(config.crd.teacher_feature)
  s_paths, t_paths = sorted(s_paths), sorted(t_paths)
  indexed = dict(plan.indexed_teacher_paths)

  # Validate feature paths (clear error for a bad one) and size the extras once, outside jit.
  s_shapes = common.feature_shapes(student, jax.eval_shape(
      lambda: student.init(jax.random.key(0), example, train=False)), example, s_paths)
  t_shapes = (common.feature_shapes(teachers[0].module, teachers[0].variables, example, t_paths)
              if teachers else {})
  for i, paths in indexed.items():
    common.feature_shapes(teachers[i].module, teachers[i].variables, example, paths)
  channels = feature_plan.check_adaptable(plan, s_shapes, t_shapes)
  extras = extras_lib.ClassifierExtras(
      adapters={f'{s}:{t}': channels[f'{s}:{t}'] for s, t in plan.adapted},
      vid={f'{s}:{t}': channels[f'{s}:{t}'] for s, t in plan.vid},
      crd_features=int(config.crd.feat_dim) if use_crd else 0,
      crd_student=config.crd.student_feature, crd_teacher=config.crd.teacher_feature)
  has_extras = bool(plan.adapted or plan.vid or use_crd)
  num_records = len(train_src)
  num_negatives = int(config.crd.num_negatives)
  if use_crd and config.crd.negatives == 'other_class':
    # The split's labels, sorted by class once on the host; a constant of the jitted step.
    crd_table = contrast.class_table(_all_labels(train_src))
    sample_negatives = lambda key, index: contrast.sample_other_class_indices(
        key, index, crd_table, num_negatives)
  else:
    sample_negatives = lambda key, index: contrast.sample_indices(
        key, index, num_negatives, num_records)

  tx = stages_lib.make_tx(stage_list)

  def init(rng: Array) -> TrainState:
    variables = student.init(rng, example, train=False)
    params = {'student': variables['params'], 'extras': {}}
    extras_state = {}
    if has_extras:
      s_feats = features_lib.apply_with_features(student, variables, example, s_paths,
                                                 train=False)[1]
      t_dummy = {p: jnp.zeros(t_shapes[p], jnp.float32) for p in t_paths}
      params['extras'] = extras.init(jax.random.fold_in(rng, 1),
                                     {p: first(f) for p, f in s_feats.items()}, t_dummy)['params']
    if use_crd:
      extras_state['crd'] = contrast.init_memory(jax.random.fold_in(rng, 2), num_records,
                                                 int(config.crd.feat_dim))
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    return TrainState.create(params=params, model_state=model_state, tx=tx,
                             extras_state=extras_state)

  def teacher_outputs(t_vars: tuple[PyTree, ...], images: Array) -> dict[str, Array]:
    out: dict[str, Array] = {}
    all_logits = []
    for i, (t, v) in enumerate(zip(teachers, t_vars)):
      paths = t_paths if i == 0 else []
      paths = sorted(set(paths) | set(indexed.get(i, ())))
      logits, feats, _ = features_lib.apply_with_features(t.module, v, images, paths, train=False)
      if i == 0:
        out.update({TEACHER + p: first(feats[p]) for p in t_paths})
      if len(teachers) > 1:
        out[f'teacher{i}_logits'] = logits
        out.update({f'teacher{i}_features/{p}': first(feats[p]) for p in indexed.get(i, ())})
      all_logits.append(logits)
    if teachers:
      # Averaged targets: the mean of the teachers' logits (one teacher: its logits).
      out['teacher_logits'] = all_logits[0] if len(teachers) == 1 else jnp.mean(
          jnp.stack(all_logits), axis=0)
    # The teachers are frozen: nothing flows back into them.
    return jax.lax.stop_gradient(out)

  def make_step(stage_index: int):
    composite = stage_list[stage_index].composite

    def step(state: TrainState, t_vars: tuple[PyTree, ...], batch: Batch, rng: Array):
      images = batch['image']
      if config.data.augment:
        # Crop before normalising so the padding is black, as in the usual recipe.
        images = augment.random_crop_flip(step_key(rng, state.step, 'augment'), images,
                                          pad=config.data.crop_padding, flip=config.data.flip)
      images = augment.normalize(images)
      if config.data.mixup_alpha:
        # Function matching: teacher and student see the very same mixed images.
        images, _ = augment.mixup(step_key(rng, state.step, 'mixup'), images,
                                  float(config.data.mixup_alpha))
      t_out = teacher_outputs(t_vars, images)

      def loss_fn(params):
        variables = {'params': params['student'], **state.model_state}
        logits, feats, new_state = features_lib.apply_with_features(
            student, variables, images, s_paths, train=True, mutable=list(state.model_state),
            rngs={'dropout': step_key(rng, state.step, 'dropout')})
        feats = {p: first(f) for p, f in feats.items()}
        outputs = {'student_logits': logits, 'labels': batch['label'], **t_out,
                   **{STUDENT + p: f for p, f in feats.items()}}
        new_extras_state = state.extras_state
        if has_extras:
          outputs.update(extras.apply({'params': params['extras']}, feats,
                                      {p: t_out[TEACHER + p] for p in t_paths}))
        if use_crd:
          emb_s = outputs.pop(extras_lib.CRD_STUDENT_EMBED)
          emb_t = outputs.pop(extras_lib.CRD_TEACHER_EMBED)
          idx = sample_negatives(step_key(rng, state.step, 'contrast'), batch['index'])
          s_scores, t_scores, memory = contrast.contrast_scores(
              state.extras_state['crd'], emb_s, emb_t, idx,
              temperature=float(config.crd.temperature))
          outputs.update(crd_student_scores=s_scores, crd_teacher_scores=t_scores,
                         crd_num_data=jnp.full(logits.shape[:1], num_records, jnp.float32))
          memory = contrast.update_memory(memory, emb_s, emb_t, batch['index'],
                                          momentum=float(config.crd.momentum))
          new_extras_state = dict(state.extras_state, crd=memory)
        total, terms = composite(outputs, state.step)
        return total, (terms, new_state, logits, new_extras_state)

      (total, (terms, new_state, logits, new_extras_state)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params)
      new = state.apply_gradients(grads, dict(new_state), stage=stage_index,
                                  extras_state=new_extras_state)
      metrics = {'loss': total, **terms, 'grad_norm': optax.tree.norm(grads)}
      if not config.data.mixup_alpha:
        metrics['accuracy'] = jnp.mean(cls_metrics.top1_correct(logits, batch['label']))
      if 'teacher_logits' in t_out:
        metrics['agreement'] = jnp.mean(cls_metrics.agreement(logits, t_out['teacher_logits']))
      return new, metrics

    return step

  @jax.jit
  def teacher_eval_step(t_vars: tuple[PyTree, ...], batch: Batch) -> tuple[Array, dict[str, Array]]:
    """The teachers' mean logits and correct counts on one eval batch (constant over training)."""
    images = augment.normalize(batch['image'])
    all_logits, out = [], {}
    for i, (t, v) in enumerate(zip(teachers, t_vars)):
      t_logits = t.module.apply(v, images, train=False)
      all_logits.append(t_logits)
      out[f'teacher{i}_correct'] = jnp.sum(
          cls_metrics.top1_correct(t_logits, batch['label']) * batch['mask'])
    return jnp.mean(jnp.stack(all_logits), axis=0), out

  @jax.jit
  def eval_step(state: TrainState, t_logits: Array | None, batch: Batch) -> dict[str, Array]:
    images = augment.normalize(batch['image'])
    mask = batch['mask']
    logits = student.apply({'params': state.params['student'], **state.model_state}, images,
                           train=False)
    out = {'student_correct': jnp.sum(cls_metrics.top1_correct(logits, batch['label']) * mask),
           'count': jnp.sum(mask)}
    if t_logits is not None:
      out['agreement'] = jnp.sum(cls_metrics.agreement(logits, t_logits) * mask)
    return out

  t_vars_global = tuple(parallel.replicate(t.variables, mesh) for t in teachers)
  # The frozen teachers' eval outputs are computed on the first evaluation only: later ones reuse
  # them (on device), so a periodic evaluation costs one student pass over the eval split.
  teacher_eval_cache: list[tuple[Array, dict[str, Array]]] = []

  def evaluate(state: TrainState, step_: int, writer: Any) -> dict[str, float]:
    del writer, step_
    sums: dict[str, Array] | None = None
    batches = data.eval_batches(eval_src, global_batch_size=config.data.eval_batch_size,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    for i, local in enumerate(batches):
      batch = parallel.to_global(local, mesh)
      if teachers and i == len(teacher_eval_cache):
        teacher_eval_cache.append(teacher_eval_step(t_vars_global, batch))
      t_logits, t_counts = teacher_eval_cache[i] if teachers else (None, {})
      out = {**eval_step(state, t_logits, batch), **t_counts}
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    host = parallel.fetch(sums)
    n = float(host['count'])
    result = {'eval/student_top1': float(host['student_correct']) / n}
    for i in range(len(teachers)):
      # One teacher keeps the plain name `teacher_top1`.
      key = 'eval/teacher_top1' if len(teachers) == 1 else f'eval/teacher{i}_top1'
      result[key] = float(host[f'teacher{i}_correct']) / n
    if teachers:
      result['eval/agreement'] = float(host['agreement']) / n
    return result

  def finalize(state: TrainState, writer: Any) -> dict[str, Any]:
    s_vars = {'params': state.params['student'], **state.model_state}
    fwd = lambda v, x: student.apply(v, x, train=False)
    out: dict[str, Any] = {
        'student': {'model': config_utils.to_dict(config.model),
                    'params': cost.param_count(state.params['student']),
                    'flops_per_example': cost.flops(fwd, s_vars, example)},
        'extras_params': cost.param_count(state.params['extras'])}
    described = []
    for i, t in enumerate(teachers):
      t_fwd = lambda v, x, m=t.module: m.apply(v, x, train=False)
      described.append({'model': t.model_config,
                        'checkpoint': (config.teacher.checkpoint if len(teachers) == 1
                                       else config.teachers[i]['checkpoint']),
                        'params': cost.param_count(t.variables['params']),
                        'flops_per_example': cost.flops(t_fwd, t.variables, example)})
    if len(described) == 1:
      out['teacher'] = described[0]
    elif described:
      out['teachers'] = described
    writer.write_texts(int(config.total_steps), {'cost': str(out)})
    return out

  def export(state: TrainState) -> PyTree:
    # Only the student: extras (adapters, VID, CRD embeddings and memory) and teachers never leave.
    return {'model': {'params': state.params['student'], **state.model_state}}

  # Trace every stage's step abstractly now (nothing runs): a loss that rejects its inputs' shapes
  # fails here with its message, before the workdir gets checkpoints or event files.
  b = config.data.batch_size
  abstract_batch = {'image': jax.ShapeDtypeStruct((b, *image_shape),
                                                  np.asarray(train_src[0]['image']).dtype),
                    'label': jax.ShapeDtypeStruct((b,), jnp.int32),
                    'index': jax.ShapeDtypeStruct((b,), jnp.int32)}
  abstract_state = jax.eval_shape(init, jax.random.key(0))
  for i in range(len(stage_list)):
    jax.eval_shape(make_step(i), abstract_state, t_vars_global, abstract_batch, jax.random.key(0))

  keys_read = ('image', 'label', 'index') if use_crd else ('image', 'label')
  train_iter = data.train_iterator(train_src, global_batch_size=config.data.batch_size,
                                   seed=config.seed, process_index=jax.process_index(),
                                   process_count=jax.process_count(), keys=keys_read)
  task = loop.Task(
      init=init, step=[make_step(i) for i in range(len(stage_list))], teacher=t_vars_global,
      train_batches=train_iter, evaluate=evaluate, export=export, finalize=finalize,
      stage_ends=[s.end for s in stage_list],
      meta={'trainer': 'classification', 'dataset': config.data.name,
            'exported': {'model': config_utils.to_dict(config.model)}})
  return loop.run(task, config, workdir, mesh)
