"""tempr1_jax data pipeline: public annotations and videos in, bucketed numpy batches out.

JAX-free by design (TensorFlow, numpy, PyAV and a transformers tokenizer only). Modules, imported on demand so
that the light ones stay light (worker processes import ``frames`` with numpy and PyAV alone):

- ``schema``          the unified samples JSONL record (docs/formats.md), the messy-input rules, JSONL I/O.
- ``formats``         one small converter per public annotation format; ``convert`` is its command line.
- ``frames``          frame sampling (fps + uniform cap), PyAV decoding, JPEG encoding (numpy + PyAV).
- ``extract_frames``  the parallel, resumable extraction command writing sharded TFRecords + an index.
- ``vision``          Qwen2.5-VL's visual preprocessing (numpy): token budget, resize, patchify.
- ``prompts``         one prompt template per task and the chat-template / ``<|video_pad|>`` expansion.
- ``tiny_tokenizer``  an offline Qwen2.5-VL-shaped byte-level BPE tokenizer for tests and demos.
- ``stream``          the deterministic, resumable, host-sharded tf.data training / evaluation stream.
- ``tfds_builder``    the ``tempr1_temporal`` TFDS builder (annotations + frames in one dataset).
- ``extras``          a one-line error for a command run in a core install (no training stack).
"""

from data_pipeline import extras as _extras

_extras.install_hook()  # a command run in a core install (no TensorFlow / PyAV): one line, not a traceback
