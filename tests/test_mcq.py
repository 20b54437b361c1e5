"""The evaluation-only mcq task (general video multiple choice) through every room that loops over the tasks:
schema, prompts, rewards (and their reference), metrics, scoring / evaluate, the trainer's refusal, the
evaluator's extra sets, baselines; plus the golden check on TempCompass's real Video-LLaVA outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from metrics_data import path, require

from data_pipeline import prompts, schema
from data_pipeline.formats import convert_files
from tempr1_jax import baselines, evaluate, evaluator, metrics, rewards, rewards_reference, scoring, setup, train_log

MCQ = {
    "id": "v1#speed#0",
    "task": "mcq",
    "video": "v1",
    "segments": [],
    "question": "How fast does it move?",
    "options": ["slowly", "fast", "not at all"],
    "answer": "B",
    "category": "speed",
    "source": "hand-made",
}


def mcq(sid: str, answer: str, category: str) -> dict:
    return dict(MCQ, id=sid, answer=answer, category=category)


def test_schema_mcq_needs_no_duration_and_no_segments():
    schema.validate_sample(MCQ)
    assert schema.check_ground_truth(MCQ)[0] == "mcq" and math.isnan(schema.check_ground_truth(MCQ)[1])
    schema.validate_sample(dict(MCQ, duration=12.5))
    assert schema.answer_index(MCQ) == 1 and schema.TASKS[-1] == "mcq" and "mcq" not in schema.TRAIN_TASKS
    for bad, match in [
        (dict(MCQ, segments=[[0, 1]]), "task mcq needs exactly 0 segment"),
        ({k: v for k, v in MCQ.items() if k != "category"}, "'category' is missing"),
        (dict(MCQ, answer="D"), "'answer'"),
        (dict(MCQ, duration=-1), "'duration'"),
        (dict(MCQ, options=["x", 2, "z"]), "'options'"),
    ]:
        with pytest.raises(ValueError, match=match):
            schema.validate_sample(bad)


def test_prompt_letters_options_asks_for_the_letter_only():
    text = prompts.task_text(MCQ)
    assert "(A) slowly\n(B) fast\n(C) not at all" in text and "How fast does it move?" in text
    assert "<evidence>" not in text and "seconds long" not in text and "<answer>B</answer>" in text
    assert prompts.target_completion(MCQ) == "<answer>B</answer>"


@pytest.mark.parametrize(
    "payload, letter",
    [
        ("B", "B"),
        (" (B) ", "B"),
        ("B.", "B"),
        ("B)", "B"),
        ("B. fast", "B"),
        ("(C) not at all", "C"),
        ("B.fast", "B"),
        ("b", None),
        ("fast", None),
        ("A dog", None),
        ("AB", None),
        ("", None),
        ("I", None),
    ],
)
def test_parse_option(payload, letter):
    assert rewards.parse_option(payload) == letter == rewards_reference.parse_option(payload)


@pytest.mark.parametrize(
    "text, fmt, ans",
    [
        ("<answer>B</answer>", 1, 1),
        ("<think>it speeds up</think> <answer>B. fast</answer>", 1, 1),
        ("<answer>A</answer>", 1, 0),
        ("B", 0, 0),
        ("<answer>fast</answer>", 0, 0),
        ("<answer>B</answer> <evidence>1 to 2</evidence>", 0, 1),
        ("<answer>A</answer> <answer>B</answer>", 0, 1),
    ],
)
def test_rewards_format_answer_and_no_localization(text, fmt, ans):
    r = rewards.compute_rewards([text], [MCQ])
    ref = rewards_reference.reward(text, MCQ)
    assert (r["format"][0], r["localization"][0], r["answer"][0]) == (fmt, 0.0, ans)
    assert ref == {"format": fmt, "localization": 0.0, "answer": ans, "total": fmt + ans}
    assert r["total"][0] == fmt + ans


def test_metrics_accuracy_per_category_and_unparsable_count():
    samples = [
        mcq("a", "A", "speed"),
        mcq("b", "B", "speed"),
        mcq("c", "C", "order"),
        mcq("d", "A", "order"),
        mcq("e", "B", "order"),
    ]
    preds = [
        {"id": "a", "answer": "A"},  # right
        {"id": "b", "completion": "<think>hm</think><answer>(B)</answer>"},  # right, completion format
        {"id": "c", "completion": "C. the third one"},  # right: a bare reply leading with its letter
        {"id": "d", "completion": "I think it is the first"},  # unparsable
    ]  # e: missing
    res = evaluate.evaluate_predictions(preds, samples)
    assert res["mcq"] == {"Acc": 60.0, "Acc/order": pytest.approx(100 / 3), "Acc/speed": 100.0}
    assert res["counts"]["mcq"] == {"total": 5, "missing": 1, "unparsable": 1, "empty": 0}
    skipped = evaluate.evaluate_predictions(preds, samples, missing="skip")["mcq"]
    assert skipped["Acc"] == 75.0 and skipped["Acc/order"] == 50.0
    table = scoring.format_table(res)
    assert "mcq: 5 samples, 1 missing (scored 0), 1 unparsable, 0 empty" in table
    assert "Acc/order" in table and "Acc/speed" in table and "more in metrics.json" not in table
    assert list(metrics.metric_names("mcq")) == ["Acc"]
    with pytest.raises(evaluate.EvalInputError, match="field 'answer': expected an option letter"):
        evaluate.evaluate_predictions([{"id": "a", "answer": 1}], samples)


def test_train_log_reports_mcq_rewards_per_task():
    r = rewards.compute_rewards(
        ["<answer>B</answer>", "<answer>1 to 2</answer>"],
        [MCQ, dict(MCQ, task="tg", segments=[[1.0, 2.0]], duration=5.0, query="q")],
    )
    out = train_log.reward_scalars(r, ["mcq", "tg"])
    assert out["reward/mcq/count"] == 1 and out["reward/mcq/answer"] == 1 and out["reward/mcq/localization"] == 0
    assert out["reward/tg/localization"] == 1 and "reward/gvqa/count" not in out


def test_prediction_record_of_a_generated_mcq_completion():
    rec = scoring.prediction_record("<answer>B</answer>", MCQ)
    assert rec == {"id": MCQ["id"], "task": "mcq", "completion": "<answer>B</answer>", "format": True, "answer": "B"}
    bare = scoring.prediction_record("B. fast", MCQ)
    assert bare["answer"] == "B" and bare["format"] is False  # the metrics read it, the format reward does not
    assert evaluate.evaluate_predictions([bare], [MCQ])["mcq"]["Acc"] == 100.0


def test_training_refuses_mcq_and_baselines_have_no_bar():
    class Stream:
        samples_per_task = {"tg": 3, "dtg": 0, "vhd": 0, "gvqa": 0, "tal": 0, "mcq": 2}

    with pytest.raises(ValueError, match=r"evaluation-only samples \(2 mcq\).*eval.extra_samples"):
        setup.check_train_tasks(Stream())
    Stream.samples_per_task = dict(Stream.samples_per_task, mcq=0)
    setup.check_train_tasks(Stream())
    with pytest.raises(ValueError, match="task mcq .* no pixel-blind bar"):
        baselines.pixel_blind_bars([MCQ])


def test_evaluator_decodes_the_slice_then_the_extra_sets_in_full():
    e = ml_collections.ConfigDict({"samples": ("a.jsonl",), "max_samples": 16, "extra_samples": ("b.jsonl", "c.jsonl")})
    assert evaluator.eval_sets(e) == [(["a.jsonl"], 16), (["b.jsonl", "c.jsonl"], 0)]
    e.samples = ()
    assert evaluator.eval_sets(e) == [(["b.jsonl", "c.jsonl"], 0)]


def test_tempr1_configs_list_the_extra_evaluation_sets_on_request():
    from tempr1_jax import configlib

    base = configlib.sibling_config(str(Path(__file__).resolve().parents[1] / "configs" / "tempr1_7b.py"))
    plain, extra = base.tempr1_config("7b", "/d"), base.tempr1_config("7b", "/d,extra")
    assert plain.eval.extra_samples == () and "/d/samples/timerft_train.jsonl" in plain.data.samples
    assert extra.eval.extra_samples == tuple(f"/d/samples/{n}.jsonl" for n in base.EXTRA_EVAL_SETS)
    assert extra.data.samples == plain.data.samples and extra.eval.samples == plain.eval.samples
    assert "tvgbench" in base.EXTRA_EVAL_SETS and "tempcompass_mc" in base.EXTRA_EVAL_SETS


# --- golden: TempCompass's own evaluation of Video-LLaVA's predictions ------------------------------------------

TC = (
    "tempcompass/multi-choice.json",
    "tempcompass/video-llava_predictions_multi-choice.json",
    "tempcompass/video-llava_auto_eval_multi-choice.json",
)


def _tempcompass():
    require(*TC)
    samples = convert_files("tempcompass", [str(path(TC[0]))]).samples
    preds, official = [], {}
    predictions, auto = (json.loads(path(p).read_text()) for p in TC[1:])
    for vid, dims in predictions.items():
        for dim, items in dims.items():
            for k, item in enumerate(items):
                judged = auto[vid][dim][k]
                assert judged["question"] == item["question"]
                sid = f"{vid}#{dim}#{k}"
                # eval_multi-choice.py drops "</s>" from the reply first; the reply is given as it is otherwise.
                preds.append({"id": sid, "completion": item["prediction"].replace("</s>", "")})
                official[sid] = (judged["match_success"], judged["rating"])
    return samples, preds, official


def test_tempcompass_video_llava_ratings_are_reproduced():
    """Every question TempCompass rated by its rules (match_success: all 1580 here, none went to its LLM judge)
    gets the same rating from our parse of the raw reply; accuracy overall and per dimension follow."""
    samples, preds, official = _tempcompass()
    by_id = {s["id"]: s for s in samples}
    ours = {p["id"]: scoring.mcq_letter(p["completion"], by_id[p["id"]]) == by_id[p["id"]]["answer"] for p in preds}
    matched = [sid for sid, (ok, _) in official.items() if ok]
    assert len(matched) == len(official) == len(samples) == 1580
    assert [sid for sid in matched if int(ours[sid]) != official[sid][1]] == []
    res = evaluate.evaluate_predictions(preds, samples)
    assert res["counts"]["mcq"] == {"total": 1580, "missing": 0, "unparsable": 0, "empty": 0}
    ratings = np.array([official[s["id"]][1] for s in samples])
    assert res["mcq"]["Acc"] == pytest.approx(100 * ratings.mean()) and round(res["mcq"]["Acc"], 2) == 45.57
    for dim in ("action", "speed", "direction", "order", "attribute_change"):
        sel = np.array([s["category"] == dim for s in samples])
        assert res["mcq"][f"Acc/{dim}"] == pytest.approx(100 * ratings[sel].mean())
    # The same replies as parsed answers (the `answer` field) score the same.
    as_answer = [{"id": p["id"], "answer": p["completion"]} for p in preds]
    assert evaluate.evaluate_predictions(as_answer, samples)["mcq"] == res["mcq"]
