"""One converter per public annotation format (``FORMAT`` names, docs/formats.md) -> unified samples.

Each converter is ``fn(paths: list[str], ctx: Context) -> None`` and emits samples into ``ctx``; problems go
to ``ctx.report`` under the rules of ``data_pipeline.schema.RULES``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from data_pipeline.formats import (
    activitynet_captions,
    charades_sta,
    detection,
    mcq,
    nextgqa,
    qvhighlights,
    thumos14,
    timer1,
)
from data_pipeline.formats.common import Context

Converter = Callable[[list[str], Context], None]

FORMATS: dict[str, Converter] = {
    "charades_sta": charades_sta.convert,
    "activitynet_captions_tg": functools.partial(
        activitynet_captions.convert, task="tg", dataset="activitynet_captions"
    ),
    "activitynet_captions_dtg": functools.partial(
        activitynet_captions.convert, task="dtg", dataset="activitynet_captions"
    ),
    "qvhighlights": qvhighlights.convert,
    "nextgqa": nextgqa.convert,
    "activitynet13": functools.partial(detection.convert, dataset="activitynet13"),
    "hacs": functools.partial(detection.convert, dataset="hacs"),
    "thumos14": thumos14.convert,
    "youcook2": functools.partial(activitynet_captions.convert, task="dtg", dataset="youcook2"),
    "timerft": timer1.convert_timerft,
    "tvgbench": timer1.convert_tvgbench,
    "tempcompass": mcq.convert_tempcompass,
    "mvbench": mcq.convert_mvbench,
    "videomme": mcq.convert_videomme,
    "perception_test_mc": mcq.convert_perception_test,
}

FORMAT_TASKS = {
    "charades_sta": "tg",
    "activitynet_captions_tg": "tg",
    "activitynet_captions_dtg": "dtg",
    "qvhighlights": "vhd",
    "nextgqa": "gvqa",
    "activitynet13": "tal",
    "hacs": "tal",
    "thumos14": "tal",
    "youcook2": "dtg",
    "timerft": "tg",
    "tvgbench": "tg",
    "tempcompass": "mcq",
    "mvbench": "mcq",
    "videomme": "mcq",
    "perception_test_mc": "mcq",
}


def convert_files(fmt: str, paths: list[str], *, split: str | None = None, video_prefix: str = "") -> Context:
    """Run one converter; returns the context with ``samples`` (input order) and ``report``."""
    if fmt not in FORMATS:
        raise KeyError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}")
    ctx = Context(split=split, video_prefix=video_prefix)
    FORMATS[fmt]([str(p) for p in paths], ctx)
    return ctx
