"""CRD as an extra of the distillation core: its embedding heads, memory bank and negative sampler.

Everything CRD needs lives here (Tian et al. 2020; the math in `kd_jax.losses.contrast`): two `Embed`
heads (params in `params['extras']['crd']`), the memory bank (non-trained state in
`model_state['extras']['crd']`, a replicated array updated inside the jitted step from the global
batch), and the sampler, chosen once when the run is built. Outputs `crd_student_scores` and
`crd_teacher_scores`; the loss's `num_data` is a run value (`compose(run_values=...)`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from kd_jax import errors
from kd_jax.losses import contrast
from kd_jax.types import Array, PyTree

NEGATIVES = ('other_class', 'uniform')
KEYS = ('crd_student_scores', 'crd_teacher_scores')


@dataclasses.dataclass(frozen=True, eq=False)
class CRD:
  """The CRD extra; build it with `build` (it checks the values and picks the sampler)."""
  student_feature: str
  teacher_feature: str
  feat_dim: int
  num_data: int
  temperature: float
  momentum: float
  sample: Callable[[Array, Array], Array]  # (key, positive [B]) -> memory rows [B, K+1]
  name: str = 'crd'

  def init(self, rng: Array, s_feats: Mapping[str, Array], t_feats: Mapping[str, Array]
           ) -> tuple[PyTree, PyTree]:
    embed = contrast.Embed(self.feat_dim)
    params = {
        'student': embed.init(jax.random.fold_in(rng, 0), s_feats[self.student_feature])['params'],
        'teacher': embed.init(jax.random.fold_in(rng, 1), t_feats[self.teacher_feature])['params']}
    return params, contrast.init_memory(jax.random.fold_in(rng, 2), self.num_data, self.feat_dim)

  def apply(self, params: PyTree, memory: PyTree, s_feats: Mapping[str, Array],
            t_feats: Mapping[str, Array], *, batch: Mapping[str, Array], rng: Array,
            **_: Any) -> tuple[dict[str, Array], PyTree]:
    embed = contrast.Embed(self.feat_dim)
    v_s = embed.apply({'params': params['student']}, s_feats[self.student_feature])
    v_t = embed.apply({'params': params['teacher']}, t_feats[self.teacher_feature])
    rows = self.sample(rng, batch['index'])
    s_scores, t_scores, memory = contrast.contrast_scores(memory, v_s, v_t, rows,
                                                          temperature=self.temperature)
    memory = contrast.update_memory(memory, v_s, v_t, batch['index'], momentum=self.momentum)
    return {KEYS[0]: s_scores, KEYS[1]: t_scores}, memory


def build(*, student_feature: str, teacher_feature: str, feat_dim: int, num_negatives: int,
          temperature: float, momentum: float, negatives: str, num_data: int,
          labels: Any = None) -> CRD:
  """A `CRD` over a training split of `num_data` records (`labels` for other-class negatives).

  Raises:
    ConfigError: missing feature paths, a bad sampler name, or K outside [1, num_data).
  """
  if not (student_feature and teacher_feature):
    raise errors.ConfigError(
        "CRD needs student_feature and teacher_feature (the module paths it embeds, e.g. "
        "'features' for both: the pooled penultimate features).")
  if negatives not in NEGATIVES:
    raise errors.ConfigError(
        f"negatives={negatives!r}; use one of {', '.join(NEGATIVES)} ('other_class': the "
        "reference's CIFAR-100 sampler; 'uniform': any memory row).")
  contrast.check_num_negatives(int(num_negatives), int(num_data))
  k = int(num_negatives)
  if negatives == 'other_class':
    # The split's labels, sorted by class once on the host; a constant of the jitted step.
    table = contrast.class_table(labels)
    sample = lambda key, index: contrast.sample_other_class_indices(key, index, table, k)
  else:
    sample = lambda key, index: contrast.sample_indices(key, index, k, int(num_data))
  return CRD(student_feature, teacher_feature, int(feat_dim), int(num_data), float(temperature),
             float(momentum), sample)
