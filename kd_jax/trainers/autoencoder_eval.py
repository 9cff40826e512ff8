"""Evaluation of an autoencoder / restoration run: PSNR/SSIM vs the clean images and the teacher."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from kd_jax import parallel
from kd_jax.trainers import gen_eval


class Evaluation:
  """The whole eval split, corrupted once with a fixed key; grids and PSNR/SSIM at each evaluation,
  cost at the end. The frozen teacher's outputs are computed once and reused."""

  def __init__(self, workdir: str, student: nn.Module, teacher: Any, source: Any,
               corrupt: Callable[[Any, Any], Any], *, seed: int, grid_size: int, batch: int,
               model_config: dict[str, Any], checkpoint: str):
    self._workdir, self._student, self._teacher = workdir, student, teacher
    self._grid, self._batch = grid_size, batch
    self._model_config, self._checkpoint = model_config, checkpoint
    self._clean = gen_eval.real_images(source, len(source))
    self._noisy = np.asarray(jax.jit(lambda x: corrupt(jax.random.key(seed), x))(self._clean))
    self._run_s = jax.jit(lambda v, x: student.apply(v, x, train=False))
    self._t_host = jax.device_get(teacher.variables) if teacher else None
    self._t_out = None

  def _outputs(self, apply_fn: Any, variables: Any) -> np.ndarray:
    return np.concatenate([np.asarray(apply_fn(variables, self._noisy[s:s + self._batch]))
                           for s in range(0, len(self._noisy), self._batch)])

  def _student_vars(self, state: Any) -> Any:
    return parallel.fetch({'params': state.params['student'], **state.model_state['student']})

  def evaluate(self, state: Any, step: int, writer: Any) -> dict[str, float]:
    s = self._outputs(self._run_s, self._student_vars(state))
    if self._teacher is not None and self._t_out is None:
      run_t = jax.jit(lambda v, x: self._teacher.module.apply(v, x, train=False))
      self._t_out = self._outputs(run_t, self._t_host)
    t, g = self._t_out, self._grid
    rows = [('input', self._clean[:g]), ('corrupted', self._noisy[:g])]
    rows += [('teacher', t[:g])] if t is not None else []
    rows += [('student', s[:g])]
    gen_eval.write_grid(self._workdir, 'restoration', step, rows, writer)
    result = gen_eval.pair_report(s, self._clean, 'eval/student_vs_clean_')
    result.update(gen_eval.pair_report(self._noisy, self._clean, 'eval/corrupted_vs_clean_'))
    if t is not None:
      result.update(gen_eval.pair_report(t, self._clean, 'eval/teacher_vs_clean_'))
      result.update(gen_eval.pair_report(s, t, 'eval/student_vs_teacher_'))
    return result

  def finalize(self, state: Any, writer: Any) -> dict[str, Any]:
    del writer
    x0 = self._clean[:1]
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
    return out
