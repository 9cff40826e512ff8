"""Evaluation of an autoencoder / restoration / image-to-image run: PSNR/SSIM vs the targets (the
clean images, or their fixed transform) and the teacher; FID vs the targets at the end."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from kd_jax import parallel
from kd_jax.metrics import image as image_metrics
from kd_jax.trainers import gen_eval


class Evaluation:
  """The whole eval split, corrupted once with a fixed key; grids and PSNR/SSIM at each evaluation,
  cost and (with a feature extractor) FID at the end. The frozen teacher's outputs are computed once
  and reused.

  `target` maps clean images to what the models should output (`kd_jax.data.paired`, named
  `target_name`); 'identity' (`target` unused) reports `*_vs_clean_*`, any other `*_vs_target_*`.
  `extractor_args`: `gen_eval.feature_extractor`'s arguments (feature_fn, classifier checkpoint,
  layer, crop, image shape); nothing set there: no FID.
  """

  def __init__(self, workdir: str, student: nn.Module, teacher: Any, source: Any,
               corrupt: Callable[[Any, Any], Any], target: Callable[[Any], Any] | None = None, *,
               seed: int, grid_size: int, batch: int, model_config: dict[str, Any],
               checkpoint: str, target_name: str = 'identity',
               extractor_args: Sequence[Any] | None = None):
    self._workdir, self._student, self._teacher = workdir, student, teacher
    self._grid, self._batch = grid_size, batch
    self._model_config, self._checkpoint = model_config, checkpoint
    self._extractor_args = extractor_args
    self._clean = gen_eval.real_images(source, len(source))
    self._identity = target_name == 'identity'
    self._target = (self._clean if self._identity else
                    np.asarray(jax.jit(target)(self._clean)))
    self._ref = 'clean' if self._identity else 'target'
    self._noisy = np.asarray(jax.jit(lambda x: corrupt(jax.random.key(seed), x))(self._clean))
    self._run_s = jax.jit(lambda v, x: student.apply(v, x, train=False))
    self._t_host = jax.device_get(teacher.variables) if teacher else None
    self._t_out = None

  def _outputs(self, apply_fn: Any, variables: Any) -> np.ndarray:
    return np.concatenate([np.asarray(apply_fn(variables, self._noisy[s:s + self._batch]))
                           for s in range(0, len(self._noisy), self._batch)])

  def _student_vars(self, state: Any) -> Any:
    return parallel.fetch({'params': state.params['student'], **state.model_state['student']})

  def _teacher_outputs(self) -> np.ndarray | None:
    if self._teacher is not None and self._t_out is None:
      run_t = jax.jit(lambda v, x: self._teacher.module.apply(v, x, train=False))
      self._t_out = self._outputs(run_t, self._t_host)
    return self._t_out

  def evaluate(self, state: Any, step: int, writer: Any) -> dict[str, float]:
    s = self._outputs(self._run_s, self._student_vars(state))
    t, g = self._teacher_outputs(), self._grid
    rows = [('input', self._clean[:g]), ('corrupted', self._noisy[:g])]
    rows += [] if self._identity else [('target', self._target[:g])]
    rows += [('teacher', t[:g])] if t is not None else []
    rows += [('student', s[:g])]
    gen_eval.write_grid(self._workdir, 'restoration', step, rows, writer)
    ref = self._ref
    result = gen_eval.pair_report(s, self._target, f'eval/student_vs_{ref}_')
    result.update(gen_eval.pair_report(self._noisy, self._clean, 'eval/corrupted_vs_clean_'))
    if t is not None:
      result.update(gen_eval.pair_report(t, self._target, f'eval/teacher_vs_{ref}_'))
      result.update(gen_eval.pair_report(s, t, 'eval/student_vs_teacher_'))
    return result

  def _fid(self, state: Any) -> dict[str, Any] | None:
    """FID of the student's (and teacher's) outputs vs the targets, and of student vs teacher, in
    one feature space, every eval image once."""
    extractor = gen_eval.feature_extractor(*self._extractor_args) if self._extractor_args else None
    if extractor is None:
      return None
    fn, name = extractor
    student_out = self._outputs(self._run_s, self._student_vars(state))
    feats = {k: image_metrics.extract_features(fn, v, self._batch)
             for k, v in (('target', self._target), ('student', student_out),
                          ('teacher', self._teacher_outputs())) if v is not None}
    out: dict[str, Any] = {'num_images': len(self._target), 'feature_extractor': name,
                           f'student_vs_{self._ref}': image_metrics.fid(feats['student'],
                                                                        feats['target'])}
    if 'teacher' in feats:
      out[f'teacher_vs_{self._ref}'] = image_metrics.fid(feats['teacher'], feats['target'])
      out['student_vs_teacher'] = image_metrics.fid(feats['student'], feats['teacher'])
    return out

  def finalize(self, state: Any, writer: Any) -> dict[str, Any]:
    del writer
    x0 = self._clean[:1]
    fid = self._fid(state)
    out: dict[str, Any] = {
        'num_eval_images': len(self._clean),
        'student': {'model': self._model_config,
                    **gen_eval.cost_report(gen_eval.module_apply(self._student),
                                           self._student_vars(state), x0)},
        'extras_params': int(gen_eval.cost.param_count(state.params['extras']))}
    if self._teacher is not None:
      out['teacher'] = {'model': self._teacher.model_config, 'checkpoint': self._checkpoint,
                        **gen_eval.cost_report(gen_eval.module_apply(self._teacher.module),
                                               self._t_host, x0)}
      out['params_ratio'] = out['student']['params'] / out['teacher']['params']
      out['flops_ratio'] = out['student']['flops_per_example'] / out['teacher']['flops_per_example']
    if fid is not None:
      out['fid'] = fid
    return out
