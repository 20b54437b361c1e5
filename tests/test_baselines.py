"""Pixel-blind bars (tempr1_jax.baselines): hand-checked optima, never above the perfect score, really achieved."""

import math

import numpy as np
import pytest

from tempr1_jax import baselines, rewards


def tg(d, s, e):
    return {"task": "tg", "duration": d, "segments": [[s, e]]}


def test_tg_bar_is_the_best_single_interval():
    samples = [tg(10.0, 0, 2), tg(10.0, 0, 2), tg(10.0, 6, 10)]
    bar = baselines.pixel_blind_bars(samples)["tg"]
    # "0 to 2" scores IoU 1, 1, 0; nothing covers both places better (0 to 10: 0.2, 0.2, 0.4)
    assert bar["completion"] == "<answer>0 to 2</answer>"
    assert bar["localization"] == pytest.approx(2 / 3) and bar["total"] == pytest.approx(1 + 2 / 3)
    assert (bar["format"], bar["answer"], bar["count"]) == (1.0, 0.0, 3)
    # a duration-relative answer is in the family: the first half of every video, whatever its length
    bar = baselines.pixel_blind_bars([tg(4.0, 0, 2), tg(10.0, 0, 5), tg(16.0, 0, 8)])["tg"]
    assert bar["localization"] == pytest.approx(1.0) and bar["rule"] == "0*d to 0.5*d"


def test_dtg_bar_has_one_answer_per_query_count():
    two = {"task": "dtg", "duration": 10.0, "segments": [[0, 2], [5, 7]]}
    three = {"task": "dtg", "duration": 10.0, "segments": [[1, 2], [3, 4], [8, 9]]}
    other = {"task": "dtg", "duration": 10.0, "segments": [[0, 2], [7, 9]]}
    samples = [two, three, two, other]
    bar = baselines.pixel_blind_bars(samples)["dtg"]
    texts = baselines.pixel_blind_completions(samples)
    assert texts[1] == "<answer>1 to 2, 3 to 4, 8 to 9</answer>"
    assert texts[0] == texts[2] == texts[3] == "<answer>0 to 2, 5 to 7</answer>"
    # N = 2: slot 1 is exact for all three; slot 2 "5 to 7" scores 1, 1, 0 (better than "5 to 9": 0.5 each),
    # so the N = 2 samples score 1, 1, 0.5 and the N = 3 one 1
    assert bar["localization"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert bar["format"] == 1.0


def test_vhd_bar_is_a_union():
    samples = [{"task": "vhd", "duration": 10.0, "segments": [[0, 2], [6, 8]]}] * 2
    bar = baselines.pixel_blind_bars(samples)["vhd"]
    assert bar["completion"] == "<answer>0 to 2, 6 to 8</answer>" and bar["localization"] == pytest.approx(1.0)
    # two videos with opposite halves: [0, 2], [2, 4], or their union all give 0.5
    samples = [
        {"task": "vhd", "duration": 4.0, "segments": [[0, 2]]},
        {"task": "vhd", "duration": 4.0, "segments": [[2, 4]]},
    ]
    assert baselines.pixel_blind_bars(samples)["vhd"]["localization"] == pytest.approx(0.5)


def test_gvqa_bar_guesses_the_most_frequent_letter_per_option_count():
    def q(options, answer):
        return {"task": "gvqa", "duration": 5.0, "segments": [[1, 3]], "options": ["x"] * options, "answer": answer}

    samples = [q(3, "A"), q(3, "A"), q(3, "B"), q(4, "D")]
    bar = baselines.pixel_blind_bars(samples)["gvqa"]
    texts = baselines.pixel_blind_completions(samples)
    evidence = " <evidence>1 to 3</evidence>"
    assert texts == ["<answer>A</answer>" + evidence] * 3 + ["<answer>D</answer>" + evidence]
    assert bar["answer"] == pytest.approx(0.75) and bar["localization"] == pytest.approx(1.0)
    assert bar["total"] == pytest.approx(2.75)
    w = baselines.pixel_blind_bars(samples, weights={"answer": 2.0, "format": 0.0})["gvqa"]
    assert w["total"] == pytest.approx(1.0 + 2 * 0.75)


def test_tal_bar_counts_and_matches():
    def a(d, *segs):
        return {"task": "tal", "duration": d, "segments": [list(s) for s in segs]}

    same = [a(10.0, (0, 1), (4, 5))] * 2
    bar = baselines.pixel_blind_bars(same)["tal"]
    assert bar["localization"] == pytest.approx(2.0) and bar["total"] == pytest.approx(3.0)
    assert sorted(bar["completion"][8:-9].split(", ")) == ["0 to 1", "4 to 5"]
    # nothing to find: the empty answer scores the maximum
    assert baselines.pixel_blind_bars([a(10.0)] * 3)["tal"]["completion"] == "<answer></answer>"
    # one video with one instance, one with none: the empty answer (e^-1 + 2) / 2 beats "0 to 1" (2 + 0) / 2
    bar = baselines.pixel_blind_bars([a(10.0, (0, 1)), a(10.0)])["tal"]
    assert bar["completion"] == "<answer></answer>"
    assert bar["localization"] == pytest.approx((math.exp(-1) + 2) / 2, abs=1e-6)
    # sigma reaches the count term: a wide sigma makes guessing nothing cheap
    wide = baselines.pixel_blind_bars([a(10.0, (0, 1)), a(10.0)], sigma=100.0)["tal"]
    assert wide["localization"] == pytest.approx((math.exp(-0.01) + 2) / 2, abs=1e-6)


def random_samples(rng, n):
    out = []
    for i in range(n):
        d = float(rng.integers(5, 40))
        task = ("tg", "dtg", "vhd", "gvqa", "tal")[i % 5]
        k = 1 if task in ("tg", "gvqa") else int(rng.integers(0 if task == "tal" else 1, 5))
        cuts = np.sort(rng.choice(np.arange(1, int(d) * 2) / 2, size=2 * k, replace=False)).reshape(-1, 2)
        s = {"task": task, "duration": d, "segments": cuts.tolist()}
        if task == "gvqa":
            s["options"] = ["o"] * int(rng.integers(2, 6))
            s["answer"] = "ABCDE"[int(rng.integers(len(s["options"])))]
        out.append(s)
    return out


@pytest.mark.parametrize("think", ["optional", "required"])
def test_bars_are_achieved_and_never_above_the_perfect_score(think):
    samples = random_samples(np.random.default_rng(0), 60)
    bars = baselines.pixel_blind_bars(samples, think=think)
    texts = baselines.pixel_blind_completions(samples, think=think)
    scores = rewards.compute_rewards(texts, samples, think=think)
    best = {"tg": 2.0, "dtg": 2.0, "vhd": 2.0, "gvqa": 3.0, "tal": 3.0}
    for task, bar in bars.items():
        rows = [i for i, s in enumerate(samples) if s["task"] == task]
        assert bar["count"] == len(rows) == 12
        assert bar["total"] == pytest.approx(float(scores["total"][rows].mean()), abs=1e-6)  # really achieved
        assert bar["format"] == 1.0 and 0 < bar["total"] < best[task]
        assert bar["completion"] == texts[rows[0]]
        assert texts[rows[0]].startswith("<think> </think> ") == (think == "required")


def test_tg_bar_is_at_least_the_demo_constant():
    from data_pipeline import synthetic

    rng = np.random.default_rng(1)
    samples = []
    for _ in range(64):
        d = int(rng.integers(6, 10))
        a = int(rng.integers(0, d - 2))
        samples.append(tg(float(d), float(a), float(rng.integers(a + 2, d + 1))))
    (a, b), iou = synthetic.best_constant_iou(samples)
    bar = baselines.pixel_blind_bars(samples)["tg"]
    assert bar["localization"] >= iou - 1e-6  # the absolute 0.5 s grid of best_constant_iou is in the family


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least one sample"):
        baselines.pixel_blind_bars([])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        baselines.pixel_blind_bars([tg(5.0, 0, 1)], weights={"format": -1.0})
    with pytest.raises(ValueError, match="think must be one of"):
        baselines.pixel_blind_completions([tg(5.0, 0, 1)], think="sometimes")
    with pytest.raises(ValueError, match="field 'task'"):
        baselines.pixel_blind_bars([{"task": "qa", "duration": 5.0, "segments": []}])
    with pytest.raises(ValueError, match="task mcq .* no pixel-blind bar"):
        baselines.pixel_blind_bars([{"task": "mcq", "segments": [], "options": ["a", "b"], "answer": "A"}])
    with pytest.raises(ValueError, match="'options'"):
        baselines.pixel_blind_bars([{"task": "gvqa", "duration": 5.0, "segments": [[0, 1]], "answer": "A"}])


def test_real_charades_sta_and_nextgqa(shared_data):
    import collections
    import csv
    import json

    from data_pipeline import synthetic

    d = shared_data / "charades_sta"
    length = {r["id"]: float(r["length"]) for r in csv.DictReader(open(d / "Charades_v1_test.csv"))}
    samples = []
    for line in open(d / "charades_sta_test.txt"):
        vid, start, end = line.split("##", 1)[0].split()
        samples.append(tg(length[vid], float(start), min(float(end), length[vid])))
    bar = baselines.pixel_blind_bars(samples)["tg"]
    assert bar["count"] == 3720 and bar["localization"] >= synthetic.best_constant_iou(samples)[1] - 1e-6
    d = shared_data / "nextgqa"
    ground = json.load(open(d / "gsub_val.json"))
    samples = []
    for row in csv.DictReader(open(d / "val.csv")):
        options = [row[f"a{i}"] for i in range(5)]
        samples.append(
            {
                "task": "gvqa",
                "duration": float(ground[row["video_id"]]["duration"]),
                "segments": ground[row["video_id"]]["location"][row["qid"]],
                "options": options,
                "answer": "ABCDE"[options.index(row["answer"])],
            }
        )
    bar = baselines.pixel_blind_bars(samples)["gvqa"]
    top = collections.Counter(s["answer"] for s in samples).most_common(1)[0][1]
    assert bar["answer"] == pytest.approx(top / len(samples)) and 0 < bar["localization"] < 1
