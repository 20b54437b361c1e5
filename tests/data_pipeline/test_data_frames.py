"""Frame sampling, PyAV decoding of tiny generated videos, and the extract_frames command."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from data_pipeline import extract_frames, frames, records, synthetic


def _indices(jpegs):
    import PIL.Image

    return [synthetic.frame_index(np.asarray(PIL.Image.open(io.BytesIO(b)).convert("RGB"))) for b in jpegs]


@pytest.mark.parametrize(
    "duration,fps,cap,expected",
    [
        (30.0, 2.0, 448, np.arange(60) / 2.0),  # 2 fps: k / 2
        (10.25, 2.0, 448, np.arange(21) / 2.0),  # ceil(20.5) = 21 targets, the last at 10.0 s
        (9.0, 0.5, 448, np.array([0.0, 2.0, 4.0, 6.0, 8.0])),
        (0.3, 2.0, 448, np.array([0.0])),  # shorter than one period: one frame
        (600.0, 2.0, 448, np.arange(448) * (600.0 / 448)),  # capped: uniform over the whole video
        (6.0, 2.0, 5, np.arange(5) * 1.2),
    ],
)
def test_sample_times(duration, fps, cap, expected):
    t = frames.sample_times(duration, fps, cap)
    np.testing.assert_allclose(t, expected)
    assert len(t) == frames.num_sampled(duration, fps, cap) <= cap
    assert t[-1] < duration


def test_sample_times_rejects_bad_values():
    for args in [(0.0, 2.0, 10), (5.0, 0.0, 10), (5.0, 2.0, 0), (float("nan"), 2.0, 10)]:
        with pytest.raises(ValueError):
            frames.sample_times(*args)


def test_select_frames():
    stored = frames.sample_times(30.0, 2.0, 448)  # 60 frames at 2 fps
    np.testing.assert_array_equal(frames.select_frames(stored, 30.0, 2.0, 448), np.arange(60))
    np.testing.assert_array_equal(frames.select_frames(stored, 30.0, 1.0, 448), np.arange(0, 60, 2))
    np.testing.assert_array_equal(frames.select_frames(stored, 30.0, 4.0, 448), np.arange(60))  # never more
    sel = frames.select_frames(stored, 30.0, 2.0, 7)
    assert len(sel) == 7 and np.all(np.diff(sel) > 0)
    np.testing.assert_allclose(stored[sel], np.arange(7) * 30 / 7, atol=0.25)


def test_output_size():
    assert frames.output_size(640, 480, None) == (640, 480)
    assert frames.output_size(641, 481, None) == (640, 480)
    w, h = frames.output_size(1920, 1080, 768 * 28 * 28)
    assert w * h <= 768 * 28 * 28 and w % 2 == 0 and h % 2 == 0 and abs(w / h - 16 / 9) < 0.01


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    synthetic.write_video(str(d / "ten_fps.mp4"), seconds=6.0, fps=10, width=64, height=48)
    synthetic.write_video(str(d / "big.mkv"), seconds=2.0, fps=5, width=320, height=240, codec="libvpx")
    synthetic.write_video(str(d / "long.mkv"), seconds=20.0, fps=10, width=64, height=48)
    synthetic.truncate_file(str(d / "ten_fps.mp4"), str(d / "cut.mp4"), 0.5)  # moov lost: cannot open
    synthetic.truncate_file(str(d / "long.mkv"), str(d / "cut_stream.mkv"), 0.5)  # decodes 11.7 of 20 s
    (d / "garbage.mp4").write_bytes(b"not a video" * 100)
    (d / "empty.mp4").write_bytes(b"")
    return d


@pytest.mark.parametrize(
    "fps,cap,times,idx",
    [
        (2.0, 448, np.arange(12) / 2, list(range(0, 60, 5))),
        (3.0, 448, None, None),  # nearest frames of 0, 1/3, 2/3, ... at 10 fps
        (2.0, 5, np.arange(5) * 1.2, [0, 12, 24, 36, 48]),
        (0.5, 448, np.array([0.0, 2.0, 4.0]), [0, 20, 40]),
    ],
)
def test_extract_video_timestamps_and_frames(videos, fps, cap, times, idx):
    ev = frames.extract_video(str(videos / "ten_fps.mp4"), "ten_fps", fps=fps, max_frames=cap)
    assert ev.duration == pytest.approx(6.0) and ev.source_fps == pytest.approx(10.0)
    if times is None:
        targets = frames.sample_times(6.0, fps, cap)
        times = np.round(targets * 10) / 10  # nearest frame at 10 fps
        idx = [int(round(t * 10)) for t in targets]
    np.testing.assert_allclose(ev.frame_times, times, atol=1e-6)
    assert _indices(ev.jpegs) == idx
    assert (ev.width, ev.height) == (64, 48)


def test_extract_video_downscales_and_other_codecs(videos):
    ev = frames.extract_video(str(videos / "big.mkv"), "big", fps=2.0, max_frames=448, max_pixels=160 * 120)
    assert (ev.width, ev.height) == (160, 120) and len(ev.jpegs) == 4
    # Targets 0, 0.5, 1, 1.5 s on a 5 fps video: 0.5 and 1.5 fall halfway; ties go to the earlier frame.
    assert _indices(ev.jpegs) == [0, 2, 5, 7]
    np.testing.assert_allclose(ev.frame_times, [0.0, 0.4, 1.0, 1.4], atol=1e-6)


@pytest.mark.parametrize(
    "name,message",
    [
        ("cut.mp4", "cannot open"),
        ("cut_stream.mkv", "truncated: frames stop at"),
        ("garbage.mp4", "cannot open"),
        ("empty.mp4", "cannot open"),
    ],
)
def test_corrupt_videos_raise_video_error(videos, name, message):
    with pytest.raises(frames.VideoError, match=message):
        frames.extract_video(str(videos / name), name)


def _read_all(out_dir):
    index = records.load_index(str(out_dir))
    reader = records.RecordReader()
    return index, {
        v: records.parse_numpy(reader.read(e["shard"], e["offset"], e["length"])) for v, e in index.items()
    }


def test_extract_frames_resumable_with_failures(videos, tmp_path):
    out = tmp_path / "frames"
    listing = tmp_path / "list.txt"
    listing.write_text(
        "\n".join(
            [
                str(videos / "ten_fps.mp4"),
                str(videos / "cut.mp4"),
                "# a comment",
                "",
                str(videos / "cut_stream.mkv"),
            ]
        )
        + "\n"
    )
    rc = extract_frames.main(
        ["--videos", str(listing), "--output", str(out), "--workers", "0", "--no-progress"]
    )
    assert rc == 0
    summary = json.loads((out / "extract_summary.json").read_text())
    assert (summary["extracted"], summary["failed"]) == (1, 2)
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert sorted(f["video"] for f in failed) == ["cut", "cut_stream"]
    index, recs = _read_all(out)
    assert list(index) == ["ten_fps"]
    r = recs["ten_fps"]
    assert r["duration"] == pytest.approx(6.0) and r["fps"] == 2.0 and r["max_frames"] == 448
    np.testing.assert_allclose(r["frame_times"], np.arange(12) / 2)
    assert _indices(r["frames"]) == list(range(0, 60, 5))
    assert index["ten_fps"]["num_frames"] == 12 and index["ten_fps"]["path"] == str(videos / "ten_fps.mp4")

    # Rerun over the whole directory with 2 worker processes: finished videos are skipped, new ones added,
    # corrupt ones retried and reported again; --strict turns the failures into exit 1.
    rc = extract_frames.main(
        [
            "--videos",
            str(videos),
            "--output",
            str(out),
            "--workers",
            "2",
            "--no-progress",
            "--videos-per-shard",
            "1",
            "--strict",
        ]
    )
    assert rc == 1
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary["already_done"] == 1 and summary["extracted"] == 2 and summary["failed"] == 4
    index, recs = _read_all(out)
    assert sorted(index) == ["big", "long", "ten_fps"]
    assert len(recs["long"]["frames"]) == 40 and _indices(recs["long"]["frames"])[:3] == [0, 5, 10]
    assert len({e["shard"] for e in index.values()}) == 3

    # Different sampling settings for the same output directory: refused with a one-line reason.
    assert (
        extract_frames.main(
            ["--videos", str(videos), "--output", str(out), "--fps", "1", "--workers", "0", "--no-progress"]
        )
        == 2
    )


def test_unfinished_shard_is_ignored_and_only_samples(videos, tmp_path):
    out = tmp_path / "frames"
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"video": "big"}) + "\n" + json.dumps({"video": "absent"}) + "\n")
    summary = extract_frames.run(
        extract_frames.list_videos(str(videos)),
        str(out),
        extract_frames.Settings(),
        only={"big", "absent"},
        progress=False,
    )
    assert summary["extracted"] == 1 and summary["missing_for_samples"] == 1
    # A crash leaves a .tmp shard without an index: the index ignores it, so a rerun redoes those videos.
    (out / "frames-x-00000.tfrecord.tmp").write_bytes(b"partial")
    (out / "frames-y-00000.tfrecord").write_bytes(b"no index")
    assert list(records.load_index(str(out))) == ["big"]
    rc = extract_frames.main(
        [
            "--videos",
            str(videos),
            "--output",
            str(out),
            "--workers",
            "0",
            "--no-progress",
            "--only-samples",
            str(samples),
        ]
    )
    assert rc == 0
    assert json.loads((out / "extract_summary.json").read_text())["already_done"] == 1


def test_samples_annotated_longer_than_their_video_are_counted_and_reported(videos, tmp_path, capsys):
    """ten_fps.mp4 is 6 s: a sample annotated 17.9 s (its ground truth past the last frame) is reported, one
    annotated 6.5 s (within frames.ANNOTATION_SLACK_S) is not, in the summary and on stderr."""
    out, samples = tmp_path / "frames", tmp_path / "s.jsonl"
    rows = [{"id": "long#0", "video": "ten_fps", "duration": 17.9}, {"id": "ok#0", "video": "ten_fps", "duration": 6.5},
            {"id": "big#0", "video": "big", "duration": 2.0}]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--videos", str(videos), "--output", str(out), "--workers", "0", "--no-progress", "--only-samples",
            str(samples)]
    assert extract_frames.main(args) == 0
    summary = json.loads((out / "extract_summary.json").read_text())
    assert (summary["shorter_than_samples"], summary["shorter_videos"]) == (1, 1)
    (ex,) = summary["shorter_examples"]
    assert (ex["id"], ex["video"], ex["annotated"]) == ("long#0", "ten_fps", 17.9) and 5.5 < ex["extracted"] < 6.5
    err = capsys.readouterr().err
    assert "1 samples (1 videos) are annotated longer than their extracted video by more than 1 s" in err
    assert "'long#0': 17.9 s annotated" in err
    assert extract_frames.main(args) == 0  # a rerun extracts nothing and still reports them (from the index)
    assert json.loads((out / "extract_summary.json").read_text())["shorter_than_samples"] == 1
    assert frames.shorter_than_annotation(7.01, 6.0) and not frames.shorter_than_annotation(7.0, 6.0)


def test_duplicate_ids_and_bad_usage(videos, tmp_path):
    dup = tmp_path / "dup"
    os.makedirs(dup / "a")
    os.makedirs(dup / "b")
    synthetic.write_video(str(dup / "a" / "x.mp4"), seconds=1.0, fps=4)
    synthetic.write_video(str(dup / "b" / "x.mp4"), seconds=1.0, fps=4)
    summary = extract_frames.run(
        extract_frames.list_videos(str(dup)), str(tmp_path / "o"), extract_frames.Settings(), progress=False
    )
    assert summary["extracted"] == 1 and summary["duplicates"] == 1
    assert extract_frames.main(["--videos", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o2")]) == 2
    assert extract_frames.main(["--videos", str(dup), "--output", str(tmp_path / "o3"), "--fps", "0"]) == 2


def test_record_reader_checks_lengths(videos, tmp_path):
    out = tmp_path / "frames"
    extract_frames.run([str(videos / "ten_fps.mp4")], str(out), extract_frames.Settings(), progress=False)
    e = records.load_index(str(out))["ten_fps"]
    reader = records.RecordReader()
    with pytest.raises(ValueError, match="index says"):
        reader.read(e["shard"], e["offset"], e["length"] - 1)
    with pytest.raises(ValueError, match="cut short"):
        reader.read(e["shard"], e["offset"] + 8, e["length"])
    reader.close()


@pytest.mark.parametrize(
    "lines,message",
    [
        # Before: "Expecting ',' delimiter: line 1 column 15 (char 14)": no file, and the stripped line's place.
        (
            ['{"video": "big"}', "", '   {"video": "x" "id": 1}'],
            r"s\.jsonl:3: not valid JSON \(Expecting ',' delimiter at column 18\)$",
        ),
        # Before: "extract_frames: error: 'video'".
        (['{"video": "big"}', '{"id": "a"}'], r"s\.jsonl:2: field 'video': None is not a video id$"),
        (["[1, 2]"], r"s\.jsonl:1: field 'video': None is not a video id$"),
        # Before: exit 0, "0 extracted".
        (["", "  "], r"s\.jsonl: no sample in the file\(s\): nothing to extract$"),
    ],
)
def test_only_samples_errors_name_file_and_line(videos, tmp_path, capsys, lines, message):
    samples = tmp_path / "s.jsonl"
    samples.write_text("\n".join(lines) + "\n")
    args = ["--videos", str(videos), "--output", str(tmp_path / "o"), "--workers", "0", "--no-progress"]
    assert extract_frames.main(args + ["--only-samples", str(samples)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"extract_frames: error: --only-samples {samples}"), err
    assert __import__("re").search(message, err[0]), err[0]


def test_empty_video_listing_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("# nothing\n\n")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9.mp4\n")
    for spec, message in [
        ("empty", "no video found (a directory is searched for .mp4 .mkv"),
        ("list.txt", "no video found"),
        ("latin1.txt", "neither a video nor a UTF-8 text list of paths (invalid continuation byte)"),
    ]:
        assert extract_frames.main(["--videos", str(tmp_path / spec), "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"extract_frames: error: --videos {tmp_path / spec}: {message}"), err


def test_corrupt_frames_config_is_named(videos, tmp_path, capsys):
    """Before: "extract_frames: error: Expecting value: line 1 column 1 (char 0)", no file."""
    out = tmp_path / "o"
    out.mkdir()
    (out / records.CONFIG_NAME).write_text("")
    assert extract_frames.main(["--videos", str(videos / "ten_fps.mp4"), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"extract_frames: error: {out / records.CONFIG_NAME}:1:1: not valid JSON (Expecting value); "
        "not an extract_frames output?"
    )
