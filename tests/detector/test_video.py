"""Video decoding and sampling with PyAV on videos written by the tests, bad video files, and aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from r2m_hf.detector import aggregate_scores
from r2m_hf.detector.inputs import MediaError
from r2m_hf.detector.video import has_video_stream, read_frames, sample_times
from r2m_hf.errors import ConfigError


def write_audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1000), dtype=np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_frames_are_sampled_at_the_centres_of_equal_slices(media):
    video = read_frames(media.face_video, 8)
    assert video.duration == pytest.approx(3.0, abs=0.11) and video.fps == pytest.approx(10)
    assert [f.index for f in video.frames] == [round(t * 10) for t in sample_times(video.duration, 8)]
    for frame, target in zip(video.frames, sample_times(video.duration, 8)):
        assert abs(frame.time - target) <= 0.05 + 1e-6  # the frame nearest each centre
    assert video.frames[0].image.size == (192, 192) and video.frames[0].image.mode == "RGB"
    assert not video.notes


def test_seeking_picks_the_same_frames_as_decoding_through(media):
    scanned = read_frames(media.face_video, 5)
    seeked = read_frames(media.face_video, 5, seek_after=0.0)
    assert [f.index for f in seeked.frames] == [f.index for f in scanned.frames]
    for a, b in zip(seeked.frames, scanned.frames):
        assert np.abs(np.asarray(a.image, dtype=int) - np.asarray(b.image, dtype=int)).mean() < 1


def test_a_short_video_gives_each_frame_once(media):
    video = read_frames(media.no_face_video, 64)  # 20 frames
    assert [f.index for f in video.frames] == list(range(20))
    assert video.notes == ["20 of 64 frames sampled (the video is shorter)"]


def test_bad_video_files_raise_one_line_media_errors(tmp_path, media):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    data = media.face_video.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_audio_only(tmp_path / "audio.mkv")
    expected = {
        "empty.mp4": "empty file",
        "text.mp4": "not a readable video",
        "truncated.mp4": "not a readable video",
        "audio.mkv": r"no video stream in this file \(audio\)",
    }
    for name, message in expected.items():
        with pytest.raises(MediaError, match=message) as caught:
            read_frames(tmp_path / name, 4)
        assert "\n" not in str(caught.value)
    assert not has_video_stream(tmp_path / "audio.mkv") and has_video_stream(media.face_video)


def test_a_cut_streaming_video_keeps_the_frames_it_has(tmp_path, media):
    data = media.no_face_video.read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: int(len(data) * 0.6)])
    try:
        video = read_frames(tmp_path / "cut.webm", 8)
    except MediaError as err:  # acceptable: a one-line note
        assert "\n" not in str(err)
    else:
        assert 1 <= len(video.frames) <= 8


def test_aggregations():
    scores = [0.1, 0.9, 0.2, 0.8, 0.3]
    assert aggregate_scores(scores) == pytest.approx(0.46)
    assert aggregate_scores(scores, "max") == 0.9
    assert aggregate_scores(scores, "median") == 0.3
    assert aggregate_scores(scores, "top-2") == pytest.approx(0.85)
    assert aggregate_scores(scores, "top-10") == pytest.approx(0.46)
    for bad in ("top-0", "mode", "top-k", ""):
        with pytest.raises(ConfigError, match="mean, max, median or top-K"):
            aggregate_scores(scores, bad)


def test_a_stream_without_duration_is_sampled_by_position(tmp_path):
    import av
    from PIL import Image

    path = tmp_path / "raw.h264"  # a bare H.264 stream knows neither its duration nor its frame times
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(25):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), (i * 10, 0, 0)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = read_frames(path, 5)
    assert video.duration is None
    assert [f.index for f in video.frames] == [0, 6, 12, 18, 24]
    assert [f.image.getpixel((5, 5))[0] // 10 for f in video.frames] == pytest.approx([0, 6, 12, 18, 24], abs=1)
