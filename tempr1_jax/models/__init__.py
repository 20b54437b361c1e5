"""Model rooms. Nothing is imported here so that host-side helpers (for example
``tempr1_jax.models.qwen25vl.rope``) stay importable with numpy alone."""
