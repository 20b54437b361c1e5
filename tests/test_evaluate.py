"""`python -m tempr1_jax.evaluate` and `evaluate_predictions`: formats, clear errors, counts, rule flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tempr1_jax import evaluate, evaluator, metrics
from tempr1_jax.evaluate import EvalInputError, evaluate_predictions

ROOT = Path(__file__).resolve().parents[1]

SAMPLES = [
    {"id": "c#0", "task": "tg", "video": "c", "duration": 30.0, "segments": [[10, 20]], "query": "q"},
    {"id": "c#1", "task": "tg", "video": "c", "duration": 30.0, "segments": [[0, 10]], "query": "q"},
    {"id": "v", "task": "dtg", "video": "v", "duration": 60.0, "segments": [[0, 10], [20, 40]],
     "queries": ["a", "b"]},
    {"id": "7", "task": "vhd", "video": "h", "duration": 8.0, "segments": [[2, 6]], "query": "q",
     "relevant_clip_ids": [1, 2], "saliency_scores": [[4, 4, 2], [1, 2, 3]]},
    {"id": "g_1", "task": "gvqa", "video": "g", "duration": 40.0, "segments": [[5, 15]], "question": "why",
     "options": ["x", "y", "z"], "answer": "B"},
    {"id": "t#jump", "task": "tal", "video": "t", "duration": 90.0, "segments": [[0, 10], [50, 60]],
     "action": "jump", "source": "thumos14/test"},
]  # fmt: skip

PREDS = [
    {"id": "c#0", "segments": [[10, 20]]},
    {"id": "c#1", "segments": [[5, 10]]},
    {"id": "v", "segments": [[0, 10], [20, 30]]},
    {"id": "7", "segments": [[2, 6]], "scores": [0.9], "saliency": [0, 3, 1, 0]},
    {"id": "g_1", "segments": [[5, 10]], "answer": "B"},
    {"id": "t#jump", "segments": [[0, 10], [50, 55], [70, 80]], "scores": [0.9, 0.8, 0.1]},
]


def write(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def run_main(args, capsys):
    rc = evaluate.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_end_to_end_writes_metrics_json(tmp_path):
    pred = write(tmp_path / "p.jsonl", PREDS)
    ann = write(tmp_path / "s.jsonl", SAMPLES)
    proc = subprocess.run(
        [sys.executable, "-m", "tempr1_jax.evaluate", "--predictions", pred, "--annotations", ann,
         "--output", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(m) == {"tg", "dtg", "vhd", "gvqa", "tal", "counts"}
    assert set(m["tg"]) == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU"}
    assert m["tg"]["mIoU"] == 75.0 and m["tg"]["R1@0.5"] == 100.0 and m["tg"]["R1@0.7"] == 50.0
    assert m["dtg"]["mIoU"] == 75.0
    spec_vhd = {"mIoU", "MR-R1@0.5", "MR-R1@0.7", "MR-mAP@0.5", "MR-mAP@0.75", "MR-mAP"}
    spec_vhd |= {f"HL-{k}-{lvl}" for k in ("mAP", "HIT@1") for lvl in ("Fair", "Good", "VeryGood")}
    assert spec_vhd <= set(m["vhd"])
    assert {"Acc", "mIoU", "IoU@0.3", "IoU@0.5", "mIoP", "IoP@0.3", "IoP@0.5", "Acc@GQA"} <= set(m["gvqa"])
    assert m["gvqa"]["Acc@GQA"] == 100.0 and m["gvqa"]["mIoU"] == 50.0
    assert {"mF1", "F1@0.1", "F1@0.3", "F1@0.5", "F1@0.7", "mAP", "mAP@0.3", "mAP@0.7"} <= set(m["tal"])
    assert m["counts"]["tal"] == {"total": 1, "missing": 0, "unparsable": 0, "empty": 0}
    for task, values in m.items():
        if task != "counts":
            assert all(isinstance(v, float) and 0 <= v <= 100 for v in values.values())
    assert "tg: 2 samples, 0 missing, 0 unparsable, 0 empty" in proc.stdout
    assert "R1@0.3" in proc.stdout and "75.00" in proc.stdout and "metrics.json" in proc.stdout


def test_table_reports_missing_and_unparsable(tmp_path, capsys):
    preds = [{"id": "c#0", "segments": None}, {"id": "g_1", "answer": "maybe", "segments": [[5, 15]]}]
    rc, out, err = run_main(
        [
            "--predictions",
            write(tmp_path / "p.jsonl", preds),
            "--annotations",
            write(tmp_path / "s.jsonl", SAMPLES),
        ],
        capsys,
    )
    assert rc == 0, err
    assert "tg: 2 samples, 1 missing (scored 0), 1 unparsable, 0 empty" in out
    assert "gvqa: 1 samples, 0 missing, 1 unparsable" in out
    assert "tal: 1 samples, 1 missing (scored 0)" in out
    rc, out, _ = run_main(
        [
            "--predictions",
            str(tmp_path / "p.jsonl"),
            "--annotations",
            str(tmp_path / "s.jsonl"),
            "--missing",
            "skip",
        ],
        capsys,
    )
    assert "1 missing (skipped)" in out and "(nothing to score)" in out  # tal: its only sample skipped


@pytest.mark.parametrize(
    "rows, message",
    [
        (["{not json"], r"p\.jsonl:1: not valid JSON"),
        ([{"id": "c#0", "segments": [[1, 2]]}, "[1, 2]"], r"p\.jsonl:2: expected a JSON object"),
        ([{"segments": [[1, 2]]}], r"p\.jsonl:1: field 'id': expected a non-empty string id"),
        ([{"id": "zzz", "segments": [[1, 2]]}],
         r"p\.jsonl:1: field 'id': unknown id 'zzz': not in the annotations .*s\.jsonl"),
        ([{"id": "c#0", "segments": [[1, 2]]}, "", {"id": "c#0", "segments": []}],
         r"p\.jsonl:3: field 'id': duplicate prediction for id 'c#0' \(first at .*p\.jsonl:1\)"),
        ([{"id": "c#0", "segments": [[1]]}],
         r"p\.jsonl:1: field 'segments': expected items \[start, end\], got \[1\]"),
        ([{"id": "c#0", "segments": [[1, "2"]]}], r"field 'segments': expected a finite number, got \"2\""),
        ([{"id": "c#0", "segments": "1 to 2"}], r"field 'segments': expected a list of \[start, end\] pairs"),
        ([{"id": "c#0", "segments": [[1, 2]], "scores": [1, 2]}], r"field 'scores': 2 scores for 1 segments"),
        ([{"id": "c#0"}], r"p\.jsonl:1: no prediction field"),
        ([{"id": "c#0", "completion": 5}], r"field 'completion': expected the raw model text"),
        ([{"id": "7", "saliency": [1, None]}], r"field 'saliency': expected a finite number, got null"),
        ([{"id": "g_1", "answer": 2}], r"field 'answer': expected an option letter or null"),
        ([{"qid": 7, "pred_relevant_windows": [[1, 2]]}],
         r"field 'pred_relevant_windows': expected items \[start, end, score\]"),
    ],
)  # fmt: skip
def test_bad_predictions_name_file_line_field(tmp_path, capsys, rows, message):
    pred = write(tmp_path / "p.jsonl", rows)
    rc, out, err = run_main(["--predictions", pred, "--annotations", write(tmp_path / "s.jsonl", SAMPLES)], capsys)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"task": "qa"}, r"s\.jsonl:1: field 'task': 'qa' is not one of tg, dtg, vhd, gvqa, tal"),
        ({"duration": -1}, r"field 'duration': must be a finite number of seconds > 0, got -1"),
        ({"duration": True}, r"field 'duration': must be a finite number of seconds > 0, got True"),
        ({"segments": [[5, 1]]}, r"field 'segments\[0\]': \[5.0, 1.0\] breaks finite start <= end"),
        ({"segments": []}, r"field 'segments': task tg needs at least 1 segment\(s\), got 0"),
        ({"id": ""}, r"field 'id': expected a non-empty string id"),
    ],
)
def test_bad_samples_name_file_line_field(tmp_path, capsys, bad, message):
    ann = write(tmp_path / "s.jsonl", [dict(SAMPLES[0], **bad)] + SAMPLES[1:])
    rc, _, err = run_main(["--predictions", write(tmp_path / "p.jsonl", PREDS), "--annotations", ann], capsys)
    assert rc == 2 and __import__("re").search(message, err), err


@pytest.mark.parametrize(
    "index, bad, message",
    [
        (4, {"answer": "b"}, r"s\.jsonl:5: field 'answer': 'b' is not an option letter A-C"),
        (4, {"answer": "D"}, r"field 'answer': 'D' is not an option letter A-C"),
        (5, {"action": ""}, r"s\.jsonl:6: field 'action': expected the action class name"),
        (3, {"relevant_clip_ids": [1]}, r"field 'saliency_scores': expected one row per relevant clip \(1\)"),
        (3, {"relevant_clip_ids": [-1, 2]}, r"field 'relevant_clip_ids': expected a list of clip indices"),
        (1, {"id": "c#0"}, r"s\.jsonl:2: field 'id': duplicate sample id 'c#0' \(first at .*s\.jsonl:1\)"),
    ],
)
def test_bad_task_fields(tmp_path, capsys, index, bad, message):
    rows = [dict(s) for s in SAMPLES]
    rows[index].update(bad)
    rc, _, err = run_main(
        [
            "--predictions",
            write(tmp_path / "p.jsonl", PREDS),
            "--annotations",
            write(tmp_path / "s.jsonl", rows),
        ],
        capsys,
    )
    assert rc == 2 and __import__("re").search(message, err), err


def test_files_and_arguments(tmp_path, capsys):
    ann = write(tmp_path / "s.jsonl", SAMPLES)
    rc, _, err = run_main(["--predictions", str(tmp_path / "nope.jsonl"), "--annotations", ann], capsys)
    assert rc == 2 and "nope.jsonl: cannot read" in err
    rc, _, err = run_main(
        ["--predictions", write(tmp_path / "p.jsonl", PREDS[:1]), "--annotations", ann, "--missing", "error"],
        capsys,
    )
    assert rc == 2 and "have no prediction" in err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--predictions", str(tmp_path / "p.jsonl")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--predictions", "p", "--annotations", "s", "--missing", "drop"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--predictions", "p", "--annotations", "s", "--colour"])
    assert e.value.code == 2 and "unrecognized arguments: --colour" in capsys.readouterr().err


def test_generation_mode_bad_inputs_are_one_line_errors(capsys, tmp_path):
    rc, out, err = run_main(["--config", "configs/demo.py", "--checkpoint", str(tmp_path / "ckpt")], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert f"--checkpoint {tmp_path / 'ckpt'}: no such directory" in err
    rc, out, err = run_main(["--config", "configs/demo.py", "--checkpoint", str(tmp_path)], capsys)
    assert rc == 2 and "neither a Hugging Face model directory" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--config", "configs/demo.py", "--config.eval.batch_size=4"])
    assert e.value.code == 2 and "generation mode needs --checkpoint DIR" in capsys.readouterr().err


def test_generation_mode_config_and_output_rules(capsys, tmp_path):
    """Without --config a train checkpoint needs its run's saved config; a Hugging Face directory needs --config
    and --output; an output directory holding an evaluation is only replaced with --overwrite."""
    run = tmp_path / "run"
    (run / "checkpoints" / "4" / "state").mkdir(parents=True)
    rc, _, err = run_main(["--checkpoint", str(run)], capsys)
    assert rc == 2 and err.count("\n") == 1 and f"its run saved no config ({run / 'config.py'}" in err
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    rc, _, err = run_main(["--checkpoint", str(hf)], capsys)
    assert rc == 2 and "is a Hugging Face directory: give --config" in err
    rc, _, err = run_main(["--config", "configs/demo.py", "--checkpoint", str(hf)], capsys)
    assert rc == 2 and "is a Hugging Face directory: give --output DIR" in err
    assert evaluator.output_dir("train", str(run / "checkpoints"), 4, None, overwrite=False) == str(
        run / "evaluate" / "step_4")
    (run / "eval" / "step_4").mkdir(parents=True)
    (run / "eval" / "step_4" / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="step_4 already holds an evaluation \\(metrics.json\\): give another"):
        evaluator.output_dir("train", str(run / "checkpoints"), 4, str(run / "eval" / "step_4"), overwrite=False)
    assert evaluator.output_dir("train", "x", 4, str(run / "eval" / "step_4"), overwrite=True).endswith("step_4")


def test_generation_mode_scores_highlights_from_the_predicted_windows(monkeypatch):
    """Completions carry no saliency scores: generation mode scores QVHighlights' HL-mAP / HIT@1 from the
    predicted windows (--hl-saliency from_segments) unless --hl-saliency is given."""
    seen = {}
    monkeypatch.setattr(evaluate, "run_generation", lambda *a, **k: seen.update(k) or 0)
    assert evaluate.main(["--checkpoint", "x"]) == 0 and seen["rules"].hl_saliency == "from_segments"
    assert evaluate.main(["--checkpoint", "x", "--hl-saliency", "given"]) == 0 and seen["rules"].hl_saliency == "given"
    record = {"id": "7", "completion": "<answer>2 to 6</answer>"}
    got = evaluate_predictions([record], [SAMPLES[3]], hl_saliency="from_segments")["vhd"]
    assert {"HL-mAP-Fair", "HL-HIT@1-VeryGood"} <= set(got)
    assert "HL-mAP-Fair" not in evaluate_predictions([record], [SAMPLES[3]])["vhd"]


def test_empty_prediction_or_annotation_files_are_refused(tmp_path, capsys):
    ann, pred = write(tmp_path / "s.jsonl", SAMPLES), write(tmp_path / "p.jsonl", PREDS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    rc, out, err = run_main(["--predictions", str(empty), "--annotations", ann], capsys)
    assert rc == 2 and out == "" and err == f"error: {empty}: no prediction in the file (empty): nothing to score\n"
    rc, out, err = run_main(["--predictions", pred, "--annotations", str(empty)], capsys)
    assert rc == 2 and err == f"error: {empty}: no sample in the file (empty): nothing to score\n"


def test_help_lists_every_rule(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--missing",
        "--reversed",
        "--threshold",
        "--clip",
        "--r1-window",
        "--max-windows",
        "--mr-empty",
        "--map-zero-length",
        "--ties",
        "--gvqa-span",
        "--hl-saliency",
        "--tal-protocol",
        "--unknown-ids",
    ):
        assert flag in out, flag  # fmt: skip


def test_rule_flags_reach_the_metrics(tmp_path, capsys):
    samples = [{"id": "a", "task": "tg", "duration": 10.0, "segments": [[0, 5]]}]
    ann = write(tmp_path / "s.jsonl", samples)
    pred = write(tmp_path / "p.jsonl", [{"id": "a", "segments": [[10, 0]]}, {"id": "x", "segments": []}])
    out_dir = tmp_path / "o"
    base = ["--predictions", pred, "--annotations", ann, "--output", str(out_dir), "--unknown-ids", "ignore"]
    assert run_main(base, capsys)[0] == 0
    assert json.loads((out_dir / "metrics.json").read_text())["tg"]["mIoU"] == 0.0
    assert run_main(base + ["--reversed", "swap"], capsys)[0] == 0
    assert json.loads((out_dir / "metrics.json").read_text())["tg"]["R1@0.5"] == 100.0
    assert run_main(base + ["--reversed", "swap", "--threshold", "gt"], capsys)[0] == 0
    assert json.loads((out_dir / "metrics.json").read_text())["tg"]["R1@0.5"] == 0.0
    assert run_main(base + ["--reversed", "swap", "--clip"], capsys)[0] == 0
    assert json.loads((out_dir / "metrics.json").read_text())["tg"]["mIoU"] == 50.0


def test_moment_detr_submission_lines_are_read_as_they_are():
    samples = [SAMPLES[3]]
    lines = [{"qid": 7, "query": "q", "vid": "h", "pred_relevant_windows": [[0, 2, 0.1], [2, 6, 0.9]],
              "pred_saliency_scores": [0, 3, 1, 0]}]  # fmt: skip
    res = evaluate_predictions(lines, samples)["vhd"]
    assert res["MR-mAP"] == 100.0 and res["MR-R1@0.5"] == 0.0  # R1 takes the first window, mAP the best score
    assert res["HL-HIT@1-VeryGood"] == 100.0


def test_api_errors_name_list_positions():
    with pytest.raises(EvalInputError, match=r"predictions\[1\]: field 'id': duplicate prediction for id 'c#0'"):
        evaluate_predictions([PREDS[0], PREDS[0]], SAMPLES)
    with pytest.raises(EvalInputError, match=r"samples\[0\]: field 'task'"):
        evaluate_predictions(PREDS, [dict(SAMPLES[0], task="x")])
    with pytest.raises(EvalInputError, match=r"predictions\[0\]: field 'id': unknown id 'c#0': not in the samples"):
        evaluate_predictions(PREDS[:1], SAMPLES[1:])
    assert evaluate_predictions(PREDS[:1], SAMPLES[1:2], unknown_ids="ignore")["counts"]["tg"]["missing"] == 1


def test_api_result_is_the_metrics_json_structure():
    res = evaluate_predictions(PREDS, SAMPLES)
    assert json.loads(json.dumps(res)) == res
    assert set(res["counts"]) == {"tg", "dtg", "vhd", "gvqa", "tal"}
    assert evaluate_predictions([], []) == {"counts": {}}


# --- raw completions, parsed by tempr1_jax.rewards.parse_completion --------------------------------------------


def test_completions_are_parsed_by_the_reward_library():
    preds = [
        {"id": "c#0", "completion": "<think>the light</think> <answer>10 to 20</answer>"},
        {"id": "c#1", "completion": "<answer>8 - 2</answer>"},  # start > end: unparsable (docs/rewards.md)
        {"id": "v", "completion": "<answer>0 - 10; 20 - 50</answer>"},  # [20, 50] vs [20, 40]: IoU 2/3
        {"id": "7", "completion": "<answer>2 to 4, 4 to 6</answer>"},
        {"id": "g_1", "completion": "<answer>(B)</answer>\n<evidence>5 to 10</evidence>"},
        {"id": "t#jump", "completion": "I think 0 to 10 <answer>0 to 10, 50 to 60, 85 to 99</answer>"},
    ]
    res = evaluate_predictions(preds, SAMPLES)
    assert res["tg"]["mIoU"] == 50.0 and res["counts"]["tg"]["unparsable"] == 1
    assert res["dtg"]["mIoU"] == pytest.approx(100 * (1 + 20 / 30) / 2)
    # Union [2, 6] equals the ground truth; the first window [2, 4] alone has IoU exactly 0.5.
    assert res["vhd"]["mIoU"] == 100.0 and res["vhd"]["MR-R1@0.5"] == 100.0 and res["vhd"]["MR-R1@0.7"] == 0.0
    assert res["gvqa"]["Acc"] == 100.0 and res["gvqa"]["Acc@GQA"] == 100.0
    assert res["tal"]["F1@0.5"] == pytest.approx(100 * 2 * (2 / 3) / (2 / 3 + 1))  # [85, 90] clipped, a FP
    assert all(c["missing"] == 0 for c in res["counts"].values())


def test_completion_edge_cases():
    samples = [SAMPLES[0], SAMPLES[4]]
    preds = [
        {"id": "c#0", "completion": "<answer>25 to 35</answer>"},  # clipped to the 30 s video: [25, 30]
        {"id": "g_1", "completion": "<answer>B</answer>"},  # no evidence block: grounding unparsable
    ]
    res = evaluate_predictions(preds, samples)
    assert res["tg"]["mIoU"] == 0.0 and res["counts"]["tg"]["unparsable"] == 0
    assert res["gvqa"]["Acc"] == 100.0 and res["gvqa"]["mIoP"] == 0.0 and res["counts"]["gvqa"]["unparsable"] == 1
    for junk in ("", "<answer>", "<answer>ten to twenty</answer>", "<answer>1 to 2 s</answer>", "\x00" * 50):
        res = evaluate_predictions([{"id": "c#0", "completion": junk}], samples[:1])
        assert res["counts"]["tg"]["unparsable"] == 1, junk
    # Parsed fields win; a gvqa line without an answer field takes the letter from its completion.
    both = [{"id": "g_1", "segments": [[5, 15]], "completion": "<answer>B</answer><evidence>0 to 1</evidence>"}]
    res = evaluate_predictions(both, samples[1:])["gvqa"]
    assert res["mIoU"] == 100.0 and res["Acc"] == 100.0


def test_completion_against_a_sample_the_parser_rejects(tmp_path, capsys):
    ann = write(tmp_path / "s.jsonl", [dict(SAMPLES[0], segments=[[0, 5], [10, 20]])])  # tg with 2 windows
    pred = write(tmp_path / "p.jsonl", [{"id": "c#0", "completion": "<answer>0 to 5</answer>"}])
    rc, _, err = run_main(["--predictions", pred, "--annotations", ann], capsys)
    assert rc == 2 and "p.jsonl:1: field 'completion': cannot be parsed against sample 'c#0'" in err


def test_vhd_miou_is_the_many_to_one_reward():
    """vhd mIoU is TempR1's number: the mean of the many-to-one localization reward."""
    from tempr1_jax.rewards import compute_rewards

    rng = __import__("random").Random(0)
    samples, preds = [], []
    for k in range(40):
        gts = sorted([round(rng.uniform(0, 50), 1), round(rng.uniform(50, 100), 1)] for _ in range(rng.randint(1, 3)))
        samples.append({"id": str(k), "task": "vhd", "duration": 120.0, "segments": gts})
        items = [
            sorted([round(rng.uniform(0, 120), 1), round(rng.uniform(0, 120), 1)]) for _ in range(rng.randint(0, 4))
        ]
        preds.append({"id": str(k), "completion": f"<answer>{', '.join(f'{a} to {b}' for a, b in items)}</answer>"})
    rewards = compute_rewards([p["completion"] for p in preds], samples)["localization"]
    ours = evaluate_predictions(preds, samples)["vhd"]["mIoU"]
    assert ours == pytest.approx(100 * float(rewards.mean()), abs=1e-4)


def test_table_names_each_metric_once():
    table = evaluate.format_table(evaluate_predictions(PREDS, SAMPLES))
    header = [ln for ln in table.splitlines() if "mF1" in ln][0].split()
    assert len(header) == len(set(header)) and "mAP@0.3" in table and "mAP@0.7" in table
    for task in ("tg", "dtg", "vhd", "gvqa", "tal"):
        names = list(metrics.metric_names(task))
        assert len(names) == len(set(names))


def test_flat_metrics_for_training_logs():
    flat = evaluate.flat_metrics(evaluate_predictions(PREDS, SAMPLES))
    assert flat["eval/tg/mIoU"] == 75.0 and flat["eval/tal/count/total"] == 1.0
    assert all(isinstance(v, float) for v in flat.values())
    assert len([k for k in flat if "/count/" in k]) == 5 * 4


def test_jsonl_lines_split_on_newlines_only_and_bad_bytes_name_the_line(tmp_path):
    from tempr1_jax import scoring

    path = tmp_path / "p.jsonl"
    path.write_bytes('{"id": "a", "completion": "x\u2028y"}\n\n{"id": "b", "completion": "z"}\n'.encode())
    assert [(w.rsplit(":", 1)[1], v["id"]) for w, v in scoring.read_jsonl(str(path))] == [("1", "a"), ("3", "b")]
    path.write_bytes(b'{"id": "a"}\n{"id": "\xe9"}\n')
    with pytest.raises(EvalInputError, match=r"p.jsonl:2: not UTF-8 text \(.*b'\\xe9' at byte 20 of the file\)"):
        scoring.read_jsonl(str(path))
    path.write_bytes(b'{"id": "a", "completion": "unterminated}\n')
    with pytest.raises(EvalInputError, match=r"p.jsonl:1: not valid JSON \(Unterminated string starting at column"):
        scoring.read_jsonl(str(path))
