"""Type aliases shared across kd_jax."""
from typing import Any, Mapping

import jax

Array = jax.Array
PyTree = Any
Batch = Mapping[str, Array]
Metrics = Mapping[str, Array]
