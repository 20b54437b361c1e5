"""Shared test setup: support modules on the path, hypothesis settings, the real annotation fixtures."""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# JAX dispatch and first-call compiles make single examples slow; a deadline would only add flakiness.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

# Support code (tiny models, reference oracles, fixtures) lives in tests/_support: `import toy_policy`.
sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real public annotation files); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real annotation files not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> str:
    """A tiny Qwen2.5-VL-shaped tokenizer built offline once per session."""
    from data_pipeline.tiny_tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(str(tmp_path_factory.mktemp("tiny_tokenizer")))


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir):
    """The tiny tokenizer loaded with transformers.AutoTokenizer."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
