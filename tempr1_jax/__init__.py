"""tempr1_jax: TempR1 (temporal-aware multi-task GRPO for video MLLMs) in JAX/Flax.

Submodules are imported on demand so that light entry points stay light: ``tempr1_jax.rewards`` needs
only jax and numpy.
"""

from data_pipeline import extras as _extras

__version__ = "0.1.0"

_extras.install_hook()  # a command of the training stack run in a core install: one line, not a traceback
