"""Contract with the reward library: converted samples are valid reward samples, and completions written in
the format the prompts ask for score full marks (skipped where tempr1_jax.rewards is not present)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data_pipeline import prompts, synthetic
from data_pipeline.schema import read_samples

rewards = pytest.importorskip("tempr1_jax.rewards")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    d = synthetic.make_dataset(str(tmp_path_factory.mktemp("contract")), num_videos=2, tokenizer=False)
    return read_samples(d["samples"])


@pytest.mark.parametrize("think", prompts.THINK_MODES)
def test_completions_in_the_prompted_format_score_full_marks(samples, think):
    comps = []
    for s in samples:
        iv = ", ".join(f"{a:.2f} to {b:.2f}" for a, b in s["segments"])
        head = "<think>the bright half moves</think> " if think == "required" else ""
        if s["task"] == "gvqa":
            comps.append(f"{head}<answer>{s['answer']}</answer> <evidence>{iv}</evidence>")
        else:
            comps.append(f"{head}<answer>{iv}</answer>")
        assert "<answer>" in prompts.task_text(s, think=think)
    r = rewards.compute_rewards(comps, samples, think=think)
    assert (r["format"] == 1).all()
    loc = np.array([2.0 if s["task"] == "tal" else 1.0 for s in samples])
    np.testing.assert_allclose(r["localization"], loc, atol=1e-3)


def test_prompt_examples_are_well_formed(samples):
    """The example answer inside each prompt is itself a parsable payload of the right shape."""
    for s in samples:
        text = prompts.task_text(s)
        ex = re.findall(r"for example (<answer>.*?</answer>(?: <evidence>.*?</evidence>)?)", text)
        assert ex, text
        fake = dict(s, segments=[[0.0, 1.0]] * (2 if s["task"] == "dtg" else 1))
        fake["duration"] = 100.0
        r = rewards.compute_rewards([ex[0]], [fake])
        assert r["format"][0] == 1, (s["task"], ex[0])
