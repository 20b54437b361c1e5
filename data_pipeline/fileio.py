"""File access for local paths and remote URLs (``gs://`` ...): plain ``open`` locally, ``tf.io.gfile`` else.

TensorFlow is imported only when a remote path is actually used, so converters and workers stay light.
"""

from __future__ import annotations

import glob as _glob
import os
from typing import IO


def is_remote(path: str) -> bool:
    """True for URLs with a scheme (``gs://bucket/x``), False for local paths."""
    return "://" in str(path)


def open_file(path: str, mode: str = "r") -> IO:
    """Open a local or remote file (text modes read and write UTF-8)."""
    path = str(path)
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, mode)
    if "b" in mode:
        return open(path, mode)  # noqa: SIM115 - returned to the caller
    return open(path, mode, encoding="utf-8", newline="" if "r" in mode else None)  # noqa: SIM115


def exists(path: str) -> bool:
    """Whether a local or remote path exists."""
    if is_remote(path):
        import tensorflow as tf

        return bool(tf.io.gfile.exists(path))
    return os.path.exists(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern, local or remote."""
    if is_remote(pattern):
        import tensorflow as tf

        return sorted(tf.io.gfile.glob(pattern))
    return sorted(_glob.glob(pattern))


def join(*parts: str) -> str:
    """Join path parts with ``/`` for URLs and ``os.path.join`` locally."""
    if is_remote(parts[0]):
        return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])
    return os.path.join(*parts)


def makedirs(path: str) -> None:
    """Create a directory and its parents (no error if it exists)."""
    if is_remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def rename(src: str, dst: str) -> None:
    """Atomic-where-possible rename, overwriting ``dst``."""
    if is_remote(src):
        import tensorflow as tf

        tf.io.gfile.rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)


def remove(path: str) -> None:
    """Delete a file if it exists."""
    if is_remote(path):
        import tensorflow as tf

        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    elif os.path.exists(path):
        os.remove(path)
