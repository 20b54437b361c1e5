"""Qwen2.5-VL (vision tower + Qwen2.5 decoder with M-RoPE) in Flax NNX.

Modules (import them directly; this package imports nothing so that the numpy-only host helpers stay light):

- ``config``      frozen dataclass config, presets (tiny / 3b / 7b / 32b / 72b), HF ``config.json`` reader.
- ``preprocess``  numpy-only video/image preprocessing: smart_resize, token budget, patchify.
- ``rope``        numpy-only ``get_rope_index`` (original Qwen / vLLM rule) and vision layout tables.
- ``model``       the NNX model: vision tower, decoder, KV cache, chunked log-probs / entropy.
- ``params``      HF safetensors loading (sharded, both key layouts, tied head) and export.
- ``sharding``    partition specs for every parameter over mesh axes ``fsdp`` and ``tp``.
"""
