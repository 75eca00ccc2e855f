"""The page's server side without a browser: jobs turn errors into one clean line, a track job
reports progress chunk by chunk, the grid and the click checks, multipart uploads."""

from __future__ import annotations

import pytest
import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.errors import DataError, HyperfeatError
from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint
from hyperfeat.model.features import FeatureExtractor
from hyperfeat.video.frames import VideoFrames
from hyperfeat.web import work
from hyperfeat.web.jobs import JobRunner, wait
from hyperfeat.web.server import clicked_point, read_multipart, safe_name


def test_jobs_give_results_or_one_clean_line(tmp_path):
    runner = JobRunner(clean=lambda text: text.replace(str(tmp_path) + "/", ""))
    try:
        done = wait(runner.submit("ok", lambda job: (job.report(0.5, "half"), {"value": 3})[1]))
        assert (done["state"], done["progress"], done["result"]) == ("done", 1.0, {"value": 3})

        def bad_input(job):
            raise DataError(f"empty video: no frames could be decoded from {tmp_path}/clip.mp4")

        failed = wait(runner.submit("bad", bad_input))
        assert (failed["state"], failed["error"]) == ("error", "empty video: no frames could be decoded from clip.mp4")

        def bug(job):
            raise RuntimeError("boom\nsecond line")

        crashed = wait(runner.submit("bug", bug))
        assert crashed["error"] == "internal error (RuntimeError): boom"
        assert runner.get(crashed["id"]).kind == "bug" and runner.get("nope") is None
    finally:
        runner.shutdown()


def test_track_job_reports_progress_per_chunk(tmp_path, tiny_cfg, tiny_backbone):
    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(
        ckpt,
        build_network(tiny_cfg, extractor.channels),
        CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, list(extractor.save_steps)),
    )
    hf = Hyperfeatures.from_checkpoint(ckpt, device="cpu", backbone=tiny_backbone, overrides=["video.batch_size=1"])
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 24, 32)  # (T, 3, H, W)
    video = VideoFrames(frames, (32, 24), (32, 24), 1.0, [])
    reports = []
    result = work.track_points(
        hf, video, [[5.0, 6.0], [20.0, 12.0]], tmp_path / "out", lambda f, s: reports.append((f, s)), tail_length=2
    )
    stages = [s for _, s in reports]
    assert stages == ["describing frames 1-1 of 2", "describing frames 2-2 of 2", "tracking", "drawing"]
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] < 1
    assert (result["num_points"], result["num_frames"]) == (2, 2)
    assert all((tmp_path / "out" / name).stat().st_size > 0 for name in result["files"])
    with pytest.raises(DataError, match="outside the frame"):
        work.track_points(hf, video, [[40.0, 6.0]], tmp_path / "bad", lambda f, s: None)
    with pytest.raises(DataError, match="no points to track"):
        work.track_points(hf, video, [], tmp_path / "bad", lambda f, s: None)


def test_grid_points_are_cell_centres():
    assert work.page_grid_points((64, 48), 2) == [[15.5, 11.5], [47.5, 11.5], [15.5, 35.5], [47.5, 35.5]]
    assert work.page_grid_points((10, 10), 1) == [[4.5, 4.5]]
    with pytest.raises(DataError, match="between 1 and 32"):
        work.page_grid_points((64, 48), 0)


def test_clicks_inside_the_picture_pass_and_beside_it_fail():
    assert clicked_point([3.25, 7.5], (160, 96)) == [3.25, 7.5]
    assert clicked_point([-0.4, 95.45], (160, 96)) == [0.0, 95.0]  # outer half of an edge pixel
    with pytest.raises(HyperfeatError, match=r"outside the 160×96 source image"):
        clicked_point([-0.6, 10.0], (160, 96))
    with pytest.raises(HyperfeatError, match=r"\(x, y\) = \(20.0, 96.0\)"):
        clicked_point([20.0, 96.0], (160, 96))


def test_multipart_upload_is_read_with_its_files_and_fields():
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\nvideo\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="0001.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG\r\n\x00\xff"
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="../0002.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"second"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    fields, files = read_multipart(f"multipart/form-data; boundary={boundary}", body)
    assert fields == {"kind": "video"}
    assert files == [("0001.png", b"\x89PNG\r\n\x00\xff"), ("../0002.png", b"second")]
    assert safe_name("../0002.png", "x") == "0002.png" and safe_name("..", "x") == "x"
    assert safe_name("my cat (1).jpg", "x") == "my_cat_1_.jpg"
