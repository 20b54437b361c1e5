"""The truncation rule for every container PyAV writes here: a cut file is skipped, never indexed shorter."""

from __future__ import annotations

import json

import pytest

from data_pipeline import extract_frames, frames, records, synthetic

SECONDS, FPS = 20.0, 10  # 200 frames
CONTAINERS = {  # name -> (extension, codec, remux options: MP4 / MOV with the index first, as streamed files)
    "mp4": ("mp4", "mpeg4", {"movflags": "+faststart"}),
    "mov": ("mov", "mpeg4", {"movflags": "+faststart"}),
    "mkv": ("mkv", "mpeg4", None),
    "webm": ("webm", "libvpx", None),
    "avi": ("avi", "mpeg4", None),
}
DECLARED = {
    "mp4": "MP4/MOV track duration",
    "mov": "MP4/MOV track duration",
    "mkv": "Matroska track DURATION tag",
    "webm": "Matroska track DURATION tag",
    "avi": r"AVI header \(200 frames at 10 fps\)",
}


def _remux(src: str, dst: str, options: dict | None, shift: float = 0.0) -> None:
    """Copy the packets of ``src`` into ``dst`` (PyAV muxer ``options``), timestamps moved by ``shift`` s."""
    import av

    with av.open(src) as inp, av.open(dst, "w", options=options or {}) as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        delta = int(round(shift / ist.time_base))
        for pkt in inp.demux(ist):
            if pkt.dts is None:
                continue
            pkt.pts, pkt.dts = pkt.pts + delta, pkt.dts + delta
            pkt.stream = ost
            out.mux(pkt)


def _write(path, name: str) -> str:
    ext, codec, options = CONTAINERS[name]
    frames_iter = (synthetic.frame_pattern(k, 64, 48) for k in range(int(SECONDS * FPS)))
    if options is None:
        synthetic.write_frames(str(path / f"{name}.{ext}"), frames_iter, fps=FPS, codec=codec)
    else:
        synthetic.write_frames(str(path / f"{name}_plain.{ext}"), frames_iter, fps=FPS, codec=codec)
        _remux(str(path / f"{name}_plain.{ext}"), str(path / f"{name}.{ext}"), options)
    return str(path / f"{name}.{ext}")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("containers")
    return {name: _write(d, name) for name in CONTAINERS}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_complete_video_is_whole(full, name):
    ev = frames.extract_video(full[name], name)
    assert ev.duration == pytest.approx(SECONDS) and len(ev.jpegs) == 40 and ev.warning == ""


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_half_file_is_truncated_for_every_container(full, name, tmp_path):
    """Half the bytes: before, the AVI was indexed as an 8.4 s video (PyAV says 10 s, its header 20 s)."""
    cut = str(tmp_path / f"cut_{name}.{CONTAINERS[name][0]}")
    synthetic.truncate_file(full[name], cut, 0.5)
    with pytest.raises(
        frames.VideoError,
        match=rf"^truncated: frames stop at \d+\.\d\d s but the {DECLARED[name]} "
        r"says 20\.00 s$",
    ):
        frames.extract_video(cut, name)


@pytest.mark.parametrize("name,fraction", [("mkv", 0.7), ("webm", 0.9), ("mp4", 0.9)])
def test_cut_within_the_old_tolerance_is_truncated(full, name, fraction, tmp_path):
    """These decode 17.1 / 17.9 / 17.4 of 20 s: within 90 % - 1 s, so they were indexed as shorter videos."""
    cut = str(tmp_path / f"cut.{CONTAINERS[name][0]}")
    synthetic.truncate_file(full[name], cut, fraction)
    with pytest.raises(frames.VideoError, match=f"truncated: .* but the {DECLARED[name]} says 20.00 s"):
        frames.extract_video(cut, name)


def test_avi_with_its_index_cut_off_keeps_every_frame(full, tmp_path):
    """90 % of the AVI keeps every frame but loses the index: PyAV then says 18 s; the header says 20 s."""
    cut = str(tmp_path / "cut.avi")
    synthetic.truncate_file(full["avi"], cut, 0.9)
    ev = frames.extract_video(cut, "avi")
    assert ev.duration == pytest.approx(SECONDS) and len(ev.jpegs) == 40 and ev.warning == ""


def test_small_shortfall_is_kept_with_a_warning(full, tmp_path):
    cut = str(tmp_path / "cut.mp4")
    synthetic.truncate_file(full["mp4"], cut, 0.97)  # decodes to 19.4 s: within the 1 s slack
    ev = frames.extract_video(cut, "mp4")
    assert ev.duration == pytest.approx(19.4) and len(ev.jpegs) == 39
    assert ev.warning == "frames stop at 19.40 s but the MP4/MOV track duration says 20.00 s: kept as a 19.40 s video"


def test_edit_list_hiding_frames_is_not_truncation(full, tmp_path):
    """An MP4 cut without re-encoding: its edit list hides 2 s that the frame count (200) still includes."""
    path = str(tmp_path / "edit.mp4")
    _remux(full["mp4"], path, None, shift=-2.0)
    ev = frames.extract_video(path, "edit")
    assert ev.duration == pytest.approx(18.0) and len(ev.jpegs) == 36 and ev.warning == ""


def test_extract_frames_skips_every_cut_container_and_retries_it(full, tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    for name, path in full.items():
        ext = CONTAINERS[name][0]
        synthetic.truncate_file(path, str(vids / f"whole_{name}.{ext}"), 1.0)
        synthetic.truncate_file(path, str(vids / f"cut_{name}.{ext}"), 0.5)
    synthetic.truncate_file(full["mp4"], str(vids / "short_mp4.mp4"), 0.97)
    out = tmp_path / "frames"
    args = ["--videos", str(vids), "--output", str(out), "--workers", "0", "--no-progress"]
    for attempt in range(2):  # the rerun retries the broken videos and redoes nothing else
        assert extract_frames.main(args) == 0
        summary = json.loads((out / "extract_summary.json").read_text())
        failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
        assert sorted(f["video"] for f in failed) == sorted(f"cut_{n}" for n in CONTAINERS)
        assert all(f["error"].startswith("truncated: frames stop at") for f in failed)
        assert summary["already_done"] == (6 if attempt else 0) and summary["extracted"] == (0 if attempt else 6)
    assert sorted(records.load_index(str(out))) == sorted([f"whole_{n}" for n in CONTAINERS] + ["short_mp4"])
    err = capsys.readouterr().err
    assert f"extract_frames: warning: {vids / 'short_mp4.mp4'}: frames stop at 19.40 s" in err
    assert "1 kept shorter than their header says" in err
