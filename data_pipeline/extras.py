"""A one-line error for a command of the training stack run in a core install (jax + numpy only).

The commands (``python -m tempr1_jax.train``, ``evaluate --checkpoint``, ``plan``, ``export``, ``filter``,
``data_pipeline.convert`` / ``extract_frames`` ...) import TensorFlow, Flax, transformers or PyAV at module
level. In a core install such an import fails before any argument is read; ``install_hook`` turns that uncaught
``ModuleNotFoundError`` into one line naming the command, the missing module and the install that brings it
(docs/install.md). Nothing else changes: the hook acts only when the running program is one of this
repository's ``python -m`` commands and the missing module belongs to the training stack.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

# Top-level modules of requirements.txt's training stack (and what they import directly), by import name.
TRAIN_STACK = frozenset({
    "absl", "av", "etils", "flax", "jinja2", "ml_collections", "optax", "orbax", "safetensors", "tensorflow",
    "tensorflow_datasets", "tokenizers", "tqdm", "transformers",
})  # fmt: skip
PACKAGES = ("tempr1_jax", "data_pipeline")


def message(command: str, missing: str) -> str:
    """The one line printed for ``python -m command`` when the training stack's ``missing`` is not installed."""
    return (
        f"error: python -m {command} needs the training stack, which this install lacks (no module named "
        f"{missing!r}): pip install -e '.[train]' (docs/install.md)"
    )


def _running_command() -> str | None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None) or ""
    return name if name.split(".")[0] in PACKAGES else None


def _hook(previous: Callable[..., Any]) -> Callable[..., None]:
    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        command = _running_command()
        missing = getattr(value, "name", None) or ""
        if isinstance(value, ModuleNotFoundError) and command and missing.split(".")[0] in TRAIN_STACK:
            print(message(command, missing), file=sys.stderr)
            return
        previous(kind, value, tb)

    hook.tempr1_install_hook = True  # type: ignore[attr-defined]
    return hook


def install_hook() -> None:
    """Chain the one-line hook in front of ``sys.excepthook`` (once)."""
    if not getattr(sys.excepthook, "tempr1_install_hook", False):
        sys.excepthook = _hook(sys.excepthook)
