"""Classifier training: supervised teachers, scratch students and distilled students, one trainer.

With no teacher this trains on labels alone (a teacher or a scratch student); with
`config.teacher.checkpoint` (or several `config.teachers`) the restored teachers are frozen and their
outputs feed the configured loss terms through the distillation core (`kd_jax.distill`). Options:

  stages            consecutive step ranges with their own loss mix and optimizer (`stages.py`)
  teachers          several frozen teachers: `teacher<i>_logits`, `teacher<i>_features/<p>`, and
                    `teacher_logits` = their mean logits; `teacher_features/<p>`, adapters and VID
                    read the first teacher
  adapter           'conv1x1' or 'conv_bn_relu' (RepDistiller's FitNets regressor)
  crd               CRD's embeddings, memory bank and sampler (`kd_jax.distill.crd`)
  data.mixup_alpha  function matching (Beyer et al. 2022): the same mixed-up batch goes to teacher
                    and student; no label terms allowed then
  teacher_cache     offline KD: the teacher's logits on A fixed augmentations of every example,
                    computed once and read by the step instead of the teacher (`kd_jax.distill.cache`)

`train_step(state, teacher, batch, rng, *, spec, stage)` is pure and importable; the shared loop
jits it with the state donated, the batch sharded over the mesh's `data` axis, the rest replicated.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from kd_jax import config_utils, data, errors, optim, parallel
from kd_jax.data import augment
from kd_jax.distill import cache as cache_lib, core, crd as crd_lib
from kd_jax.losses.compose import Composite
from kd_jax.metrics import classification as cls_metrics
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import classification_eval, common, loop, stages as stages_lib
from kd_jax.types import Array, Batch, PyTree

OFFERS = ('student_logits', 'teacher_logits', 'labels', 'student_features', 'teacher_features',
          'adapted', 'vid_mean', 'vid_log_variance') + crd_lib.KEYS


def default_config() -> ml_collections.ConfigDict:
  """Every field a classification config may set (configs start from this)."""
  c = loop.default_config(trainer='classification')
  # test_split: evaluated once, after training ('test/...'), while eval_split (e.g. a validation
  # split carved from train) is what periodic evaluations and every tuning choice read.
  c.data = common.data_config(eval_batch_size=1000, augment=True, crop_padding=2, flip=True,
                              mixup_alpha=0.0, test_split='')
  c.model = {'name': 'small_cnn', 'num_classes': 10}
  c.teacher = common.teacher_config()
  c.teachers = []
  c.losses = [('ce', 1.0, {})]
  c.stages = []
  c.adapter = 'conv1x1'
  # CRD (Tian et al. 2020); defaults are the reference's (feat_dim, nce_k, nce_t, nce_m).
  c.crd = ml_collections.ConfigDict(dict(
      student_feature='', teacher_feature='', feat_dim=128, num_negatives=16384,
      temperature=0.07, momentum=0.5, negatives='other_class'))
  c.optimizer = optim.default_optimizer_config()
  # mode 'off' | 'online' | 'cached' (kd_jax.distill.cache); copies: augmentations per example;
  # seed: of those augmentations (shared by every run of a sweep); dir: '' = beside the dataset.
  c.teacher_cache = ml_collections.ConfigDict(dict(mode='off', copies=4, seed=0, dir=''))
  # 'bfloat16': convolutions/matmuls in bfloat16, params, optimizer and losses float32
  # (kd_jax.distill.core); the fast path on TPU and recent GPUs, slow on CPUs without bf16 units.
  c.compute_dtype = 'float32'
  return c


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
  """Everything a classification step needs besides its arguments, built once from the config."""
  distiller: core.Distiller
  losses: tuple[Composite, ...]  # one per stage
  augment: bool = True
  crop_padding: int = 2
  flip: bool = True
  mixup_alpha: float = 0.0
  cache_mode: str = 'off'
  cache_copies: int = 4
  cache_seed: int = 0


def step_inputs(spec: Spec, images: Array, step: Array, rng: Array, index: Array | None = None,
                copy: Array | None = None) -> Array:
  """Crop+flip (before normalising, so the padding is black), normalise, then optional mixup.

  With a teacher cache mode the crop/flip is copy `copy` of example `index` (fixed per example).
  """
  if spec.cache_mode != 'off':
    images = cache_lib.augmented(cache_lib.augmentation_root(spec.cache_seed), images, index, copy,
                                 spec.cache_copies, pad=spec.crop_padding, flip=spec.flip,
                                 enabled=spec.augment)
  elif spec.augment:
    images = augment.random_crop_flip(step_key(rng, step, 'augment'), images,
                                      pad=spec.crop_padding, flip=spec.flip)
  images = augment.normalize(images)
  if spec.mixup_alpha:
    # Function matching: teacher and student see the very same mixed images.
    images, _ = augment.mixup(step_key(rng, step, 'mixup'), images, spec.mixup_alpha)
  return images


def train_step(state: TrainState, teacher: PyTree, batch: Batch, rng: Array, *, spec: Spec,
               stage: int = 0) -> tuple[TrainState, dict[str, Array]]:
  """One step of stage `stage`: teacher outputs (constants), the student's loss, its update."""
  copy = None
  if spec.cache_mode != 'off':
    copy = cache_lib.draw_copies(step_key(rng, state.step, 'augment'), batch['image'].shape[0],
                                 spec.cache_copies)
  images = step_inputs(spec, batch['image'], state.step, rng, batch.get('index'), copy)
  if spec.cache_mode == 'cached':
    # Offline KD: the frozen teacher's logits on exactly these inputs, computed once.
    logits = teacher['cache'][batch['index'], copy]
    t_out = {'teacher_logits': logits, 'teacher0_logits': logits}
  else:
    t_out = spec.distiller.teacher_outputs(teacher, images)

  def loss_fn(params):
    out, model_state = spec.distiller.student_outputs(
        params, state.model_state, images, t_out, tree=teacher, train=True, batch=batch,
        rngs={'dropout': step_key(rng, state.step, 'dropout')},
        extras_rng=step_key(rng, state.step, 'contrast'))
    total, terms = spec.losses[stage]({**out, **t_out, 'labels': batch['label']}, state.step)
    return total, (terms, model_state, out['student_logits'])

  (total, (terms, model_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  metrics = {'loss': total, **terms, 'grad_norm': optax.tree.norm(grads)}
  if not spec.mixup_alpha:
    metrics['accuracy'] = jnp.mean(cls_metrics.top1_correct(logits, batch['label']))
  if 'teacher_logits' in t_out:
    metrics['agreement'] = jnp.mean(cls_metrics.agreement(logits, t_out['teacher_logits']))
  return state.apply_gradients(grads, model_state, stage=stage), metrics


def build_spec(config: ml_collections.ConfigDict, student: Any, teachers: list[Any], train_src: Any,
               example: Array) -> tuple[Spec, list[stages_lib.Stage]]:
  """The boundary: reads the config's loss, CRD and data fields into a `Spec` (and the stages)."""
  d = config.data
  config_utils.check_count(d.crop_padding, 'config.data.crop_padding', low=0,
                           meaning='pixels of padding of the random crop')
  if isinstance(d.mixup_alpha, bool) or not isinstance(d.mixup_alpha, (int, float)) or not (
      d.mixup_alpha >= 0):
    raise errors.ConfigError(f'config.data.mixup_alpha={d.mixup_alpha!r} must be a number >= 0 '
                             '(the Beta(α, α) of mixup; 0 turns it off).')
  stage_list = stages_lib.build(config, run_values={'num_data': len(train_src)})
  required = stages_lib.required_keys(stage_list)
  common.check_keys(required, OFFERS, 'classification', len(teachers))
  if 'labels' in required and config.data.mixup_alpha:
    raise errors.ConfigError(
        f'config.data.mixup_alpha={config.data.mixup_alpha} mixes images, so label terms are '
        "undefined; drop the terms reading 'labels' (function matching learns from the teacher "
        'alone) or set config.data.mixup_alpha=0.')
  crd = None
  if required & set(crd_lib.KEYS):
    with config_utils.field_context('config.crd'):
      crd = crd_lib.build(**config_utils.to_dict(config.crd), num_data=len(train_src),
                          labels=(common.split_labels(train_src)
                                  if config.crd.negatives == 'other_class' else None))
  with config_utils.field_context('config.losses'):
    distiller = core.build(student, teachers, required, output='logits', example=example,
                           adapter=config.adapter, crd=crd,
                           compute_dtype=compute_dtype(config.compute_dtype))
  tc = config.teacher_cache
  _check_cache_config(tc, required, teachers, float(d.mixup_alpha))
  return Spec(distiller, tuple(s.composite for s in stage_list), bool(d.augment),
              int(d.crop_padding), bool(d.flip), float(d.mixup_alpha), str(tc.mode),
              int(tc.copies), int(tc.seed)), stage_list


COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  """`config.compute_dtype` → the distiller's compute dtype (None: float32 throughout)."""
  if name not in COMPUTE_DTYPES:
    raise errors.ConfigError(f'config.compute_dtype={name!r}; use one of {sorted(COMPUTE_DTYPES)}.')
  return COMPUTE_DTYPES[name]


# What a cached step can provide: the student's own outputs, labels and the teacher's logits.
CACHE_KEYS = frozenset({'student_logits', 'teacher_logits', 'teacher0_logits', 'labels'})


def _check_cache_config(tc: ml_collections.ConfigDict, required: set[str], teachers: list[Any],
                        mixup_alpha: float) -> None:
  if tc.mode not in cache_lib.MODES:
    raise errors.ConfigError(f'config.teacher_cache.mode={tc.mode!r}; use one of '
                             f'{cache_lib.MODES}.')
  if tc.mode == 'off':
    return
  config_utils.check_count(tc.copies, 'config.teacher_cache.copies',
                           meaning='fixed augmentations per example')
  config_utils.check_count(tc.seed, 'config.teacher_cache.seed', low=0, meaning='seed')
  if not teachers:
    raise errors.ConfigError(f'config.teacher_cache.mode={tc.mode!r} caches a teacher, but there '
                             "is none: set config.teacher.checkpoint or mode='off'.")
  if mixup_alpha:
    raise errors.ConfigError('config.teacher_cache caches the teacher on fixed crops, but '
                             f'config.data.mixup_alpha={mixup_alpha} mixes new images every step; '
                             "set one of them off (teacher_cache.mode='off' or mixup_alpha=0).")
  extra = sorted(set(required) - CACHE_KEYS)
  if tc.mode == 'cached' and extra:
    raise errors.ConfigError(f'config.losses read {extra}, which a teacher cache does not hold (it '
                             f'stores logits only: {sorted(CACHE_KEYS)}); drop those terms or set '
                             "config.teacher_cache.mode='off'.")


def check_num_classes(student: Any, example: Array, dataset: str, data_dir: str | None) -> None:
  """ConfigError when the student has fewer logits than the dataset has classes: labels past the
  last logit make the cross-entropy NaN at step 1, which would otherwise read as divergence."""
  logits = jax.eval_shape(functools.partial(student.init_with_output, train=False),
                          jax.random.key(0), example)[0]
  classes = data.dataset_info(dataset, data_dir).num_classes
  if getattr(logits, 'ndim', 0) == 2 and logits.shape[-1] < classes:
    raise errors.ConfigError(
        f'config.model gives {logits.shape[-1]} logits but {dataset!r} has {classes} classes; set '
        f'config.model.num_classes={classes}.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a classifier (optionally distilling frozen teachers) and evaluates it; see module doc."""
  run = common.prepare(config, default_config(), workdir, with_eval=True)
  example = jnp.zeros((1, *run.image_shape), jnp.float32)
  student = config_utils.build_model(config.model, 'config.model')
  check_num_classes(student, example, config.data.name, config.data.data_dir or None)
  teachers = common.restore_teachers(config, role='model', example=example)
  spec, stage_list = build_spec(config, student, teachers, run.train_source, example)
  tx = stages_lib.make_tx(stage_list)

  def init(rng: Array) -> TrainState:
    params, model_state = spec.distiller.init(rng, example)
    return TrainState.create(params=params, model_state=model_state, tx=tx)

  steps = [functools.partial(train_step, spec=spec, stage=i) for i in range(len(stage_list))]
  teacher_tree = parallel.place_teacher(spec.distiller.teacher_tree(teachers), run.mesh)
  step_teacher = teacher_tree
  if spec.cache_mode == 'cached':
    step_teacher = {'cache': parallel.replicate(
        _teacher_cache(config, spec, spec.distiller.teacher_tree(teachers), teacher_tree,
                       run.train_source), run.mesh)}
  # Trace every stage's step abstractly now (nothing runs): a loss that rejects its inputs' shapes
  # fails here with its message, before the workdir gets checkpoints or event files.
  batch = classification_eval.abstract_batch(config.data.batch_size, run.train_source)
  abstract_state = jax.eval_shape(init, jax.random.key(0))
  if spec.cache_mode != 'off':
    batch = {**batch, 'index': jax.ShapeDtypeStruct(batch['label'].shape, jnp.int32)}
  for step in steps:
    jax.eval_shape(step, abstract_state, step_teacher, batch, jax.random.key(0))
  evaluator = classification_eval.Evaluator(student, tuple(t.module for t in teachers),
                                            teacher_tree, run.eval_source,
                                            int(config.data.eval_batch_size), run.mesh)
  # CRD addresses its memory bank by each record's index.
  uses_crd = any(isinstance(e, crd_lib.CRD) for e in spec.distiller.extras)
  keys_read = (('image', 'label', 'index') if uses_crd or spec.cache_mode != 'off'
               else ('image', 'label'))
  finalize = functools.partial(
      classification_eval.finalize, step=int(config.total_steps), student=student,
      model_config=config_utils.to_dict(config.model), teachers=teachers,
      checkpoints=common.checkpoints_of(config), example=example)
  if config.data.test_split:
    with config_utils.field_context('config.data.test_split'):
      test_source = data.get_source(config.data.name, config.data.test_split,
                                    data_dir=config.data.data_dir or None,
                                    cache_in_memory=config.data.cache_in_memory)
    tester = classification_eval.Evaluator(student, tuple(t.module for t in teachers),
                                           teacher_tree, test_source,
                                           int(config.data.eval_batch_size), run.mesh)
    finalize = functools.partial(_finalize_with_test, finalize, tester, int(config.total_steps),
                                 config.data.test_split)
  task = loop.Task(
      init=init, step=steps, teacher=step_teacher,
      train_batches=common.train_batches(config, run.train_source, keys_read),
      evaluate=evaluator.evaluate, export=export, finalize=finalize,
      stage_ends=[s.end for s in stage_list],
      meta={'trainer': 'classification', 'dataset': config.data.name,
            'exported': {'model': config_utils.to_dict(config.model)}})
  return loop.run(task, loop.Settings.from_config(config), workdir, run.mesh)


def _finalize_with_test(finalize: Any, tester: Any, step: int, split: str, state: TrainState,
                        writer: Any) -> dict[str, Any]:
  """The usual final cost entries plus the one test-split evaluation ('test/...')."""
  out = finalize(state, writer)
  scores = {k.replace('eval/', 'test/', 1): v for k, v in tester.evaluate(state, step, None).items()}
  writer.write_scalars(step, scores)
  return {**out, 'test': {'split': split, **scores}}


def _teacher_cache(config: ml_collections.ConfigDict, spec: Spec, host_tree: PyTree,
                   teacher_tree: PyTree, source: Any) -> Any:
  """The [N, copies, C] teacher logits of the train split: read when present, else built now.

  `host_tree` (the restored variables, unplaced) names the teacher; `teacher_tree` (placed on the
  mesh) computes it.
  """
  d, tc = config.data, config.teacher_cache
  key = cache_lib.describe(
      teacher_fingerprint=cache_lib.fingerprint(host_tree), dataset=d.name,
      split=d.train_split, num_examples=len(source), copies=spec.cache_copies,
      pad=spec.crop_padding, flip=spec.flip, augment_enabled=spec.augment, seed=spec.cache_seed)
  directory = tc.dir or os.path.join(data.sources.dataset_dir(d.name, d.data_dir or None),
                                     cache_lib.DIRNAME)
  t_logits = lambda x: spec.distiller.teacher_outputs(teacher_tree, x)['teacher_logits']
  cache, path, built = cache_lib.load_or_build(directory, key, lambda: cache_lib.build(
      t_logits, source, copies=spec.cache_copies, pad=spec.crop_padding, flip=spec.flip,
      augment_enabled=spec.augment, seed=spec.cache_seed))
  if parallel.is_chief():
    print(f'[kd_jax] teacher cache: {"built" if built else "read"} {path} '
          f'({cache.shape[0]} examples × {cache.shape[1]} copies)', flush=True)
  return cache


def export(state: TrainState) -> PyTree:
  """Only the student: extras (adapters, VID, CRD heads and memory) and teachers never leave."""
  return {'model': {'params': state.params['student'], **state.model_state['student']}}
