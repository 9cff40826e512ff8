"""kd_jax: knowledge distillation in JAX/Flax — classifiers and image generators."""
