"""tempr1_jax: TempR1 (temporal-aware multi-task GRPO for video MLLMs) in JAX/Flax.

Submodules are imported on demand so that light entry points stay light: ``tempr1_jax.rewards`` needs
only jax and numpy.
"""

__version__ = "0.1.0"
