"""Distillation losses: pure per-example callables, a registry by name, and weighted composition.

Every loss is `fn(predictions, targets, *extra, **hyperparameters) -> [B]` (student first, teacher or
labels second, hyperparameters keyword-only with the paper's defaults) and never reduces over the batch:
the single reduction is `compose`'s  total = Σ_i w_i(step) · mean_b ℓ_i(b)  (see compose.py).

Losses do not call `stop_gradient`: the train step passes teacher outputs as constants (computed outside
the differentiated function, or wrapped in `jax.lax.stop_gradient`), so only the student is trained.
All losses compute in float32 even for bfloat16 inputs.

    composite = losses.compose([('kd', 0.9, {'temperature': 4.0}), ('ce', 0.1)])
    total, terms = composite({'student_logits': s, 'teacher_logits': t, 'labels': y}, step)
"""
from kd_jax.losses import contrast
from kd_jax.losses.compose import Composite, Term, compose
from kd_jax.losses.contrast import crd
from kd_jax.losses.feature import at, cc, cc_repdistiller, fitnet, nst, pkt, rkd, sp, vid, vid_log_variance_init
from kd_jax.losses.generative import (feature_mse, gan_ns_d, gan_ns_g, l1, l2, lpips, relation_kl,
                                      tempered_sigmoid_kl)
from kd_jax.losses.logit import ce, dist, dkd, hard_ce, js, kd, logit_mse, reverse_kl
from kd_jax.losses.registry import STANDARD_ROLES, LossDef, get, names, register

__all__ = [
    'Composite', 'LossDef', 'STANDARD_ROLES', 'Term', 'compose', 'get', 'names', 'register',
    'contrast',
    'at', 'cc', 'cc_repdistiller', 'ce', 'crd', 'dist', 'dkd', 'feature_mse', 'fitnet', 'gan_ns_d', 'gan_ns_g', 'hard_ce',
    'js', 'kd', 'l1', 'l2', 'logit_mse', 'lpips', 'nst', 'pkt', 'relation_kl', 'reverse_kl', 'rkd', 'sp',
    'tempered_sigmoid_kl', 'vid', 'vid_log_variance_init',
]
