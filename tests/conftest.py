"""Shared test setup: hypothesis settings and the location of the real annotation fixtures."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# JAX dispatch and first-call compiles make single examples slow; a deadline would only add flakiness.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real public annotation files); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real annotation files not found at {SHARED_DATA}")
    return SHARED_DATA
