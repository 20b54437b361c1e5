"""tempr1_jax.evaluator without a model: generated completions -> prediction records (padding rows dropped),
the evaluation log row, and where evaluations are written."""

from __future__ import annotations

import json

import batches
import numpy as np
import pytest

from tempr1_jax import evaluator, train_log

SAMPLES = [
    {"id": "c#0", "task": "tg", "video": "c", "duration": 30.0, "segments": [[10, 20]], "query": "q"},
    {"id": "g_1", "task": "gvqa", "video": "g", "duration": 40.0, "segments": [[5, 15]], "question": "why",
     "options": ["a", "b", "c"], "answer": "B"},
]


class WordTokenizer:
    """Decodes token ids as words of a fixed list (a stand-in for a real tokenizer's batch_decode)."""

    WORDS = ["<answer>10 to 20</answer>", "<answer>B</answer> <evidence>5 to 9</evidence>", "junk"]

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(self.WORDS[t] for t in row) for row in rows]


def stream_batch(rows: list[dict], valid: list[bool]):
    return batches.stream_batch(input_ids=np.zeros((len(rows), 4), np.int32),
                                sample_json=np.array([json.dumps(s).encode() for s in rows]),
                                sample_mask=np.array(valid))


def test_generate_predictions_parses_each_valid_row_and_drops_padding():
    batch = stream_batch([SAMPLES[0], SAMPLES[1], SAMPLES[0]], [True, True, False])

    def generate(b):
        tokens = np.array([[0, 2], [1, 2], [2, 2]])
        return tokens, np.array([[True, False], [True, False], [True, True]])

    records, samples = evaluator.generate_predictions([batch], generate, WordTokenizer())
    assert [r["id"] for r in records] == ["c#0", "g_1"] and samples == SAMPLES
    assert records[0] == {"id": "c#0", "task": "tg", "completion": "<answer>10 to 20</answer>",
                          "segments": [[10.0, 20.0]], "format": True}
    assert records[1]["answer"] == "B" and records[1]["segments"] == [[5.0, 9.0]]
    with pytest.raises(ValueError, match="generate returned 1 completions for a batch of 3 prompts"):
        evaluator.generate_predictions([batch], lambda b: (np.zeros((1, 1), int), np.ones((1, 1), bool)),
                                       WordTokenizer())


def test_log_eval_writes_the_per_task_metrics_and_mean_rewards(tmp_path, caplog):
    jsonl = train_log.MetricsFile(str(tmp_path / "metrics.jsonl"))
    result = {"predictions": [{"id": "c#0"}], "samples": [SAMPLES[0]], "seconds": 1.5,
              "metrics": {"tg": {"mIoU": 50.0}, "counts": {"tg": {"total": 1, "missing": 0}}},
              "rewards": {"total": 1.5, "format": 1.0, "localization": 0.5, "answer": 0.0},
              "task_rewards": {"tg": {"total": 1.5, "format": 1.0, "localization": 0.5, "answer": 0.0}}}
    with caplog.at_level("INFO", logger="tempr1_jax"):
        evaluator.log_eval(result, 7, None, jsonl)
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["step"] == 7 and row["eval/tg/mIoU"] == 50.0 and row["eval/tg/count/total"] == 1
    assert row["eval/reward/localization"] == 0.5 and row["eval/seconds"] == 1.5
    assert row["eval/tg/reward/localization"] == 0.5 and row["eval/tg/reward/total"] == 1.5
    # One log record (console and train.log): the per-task counts and the table.
    (text,) = [r.getMessage() for r in caplog.records if "eval at step 7" in r.getMessage()]
    assert "(1 samples: tg 1; 1.5 s)" in text and "\ntg: 1 samples, 0 missing" in text and "mIoU" in text
    evaluator.log_eval(dict(result, predictions=[]), 8, None, jsonl)  # nothing decoded: nothing logged
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_records_of_one_process_are_its_own_and_eval_dirs_are_per_step():
    assert evaluator.gather_records([{"a": 1}]) == [{"a": 1}]
    assert evaluator.eval_dir("/w", 25) == "/w/eval/step_25"
