"""The video evaluations (DAVIS J&F, JHMDB PCK, TAP-Vid) through ``evaluate_video`` on the real
data, with the tiny random backbone and an untrained network: the numbers only show that the
pipeline runs; the metrics themselves are checked in test_metrics.py."""

from __future__ import annotations

import pytest

from hyperfeat.errors import ConfigError
from tests.helpers import (
    data_dir,
    make_hf,
)


def in_unit(value) -> bool:
    return 0.0 <= float(value) <= 1.0


# ---------------------------------------------------------------------------------------------
# evaluation on the real data (tiny backbone: the numbers only show the pipeline runs)


def test_evaluate_davis(parts, tmp_path):
    data_dir("davis2017")
    from hyperfeat.eval.runner import evaluate_video

    hf = make_hf(
        parts,
        "task=davis",
        "data.sequences=[bike-packing,soapbox]",
        "data.max_frames=3",
        "video.frame_size=256",
        "eval.save_vis=1",
        f"paths.output_dir={tmp_path}",
    )
    results, table = evaluate_video(hf, progress=False)
    for prefix in ("multi_object/", "foreground/"):
        for key in ("J&F", "J-Mean", "F-Mean", "J-Recall", "F-Recall"):
            assert in_unit(results[prefix + key]), (prefix + key, results[prefix + key])
        for key in ("J-Decay", "F-Decay"):
            assert -1 <= float(results[prefix + key]) <= 1
    # soapbox's objects are merged in this copy: foreground only
    assert "multi_object/seq/bike-packing/J&F" in results and "multi_object/seq/soapbox/J&F" not in results
    assert "foreground/seq/soapbox/J&F" in results
    assert float(results["multi_object/num_objects"]) == 2 and float(results["num_sequences"]) == 2
    assert float(results["num_sequences_multi_object"]) == 1
    assert "bike-packing" in table and "soapbox *" in table and "J&F" in table
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("sequence"))
    assert len(next(line for line in lines if line.startswith("bike-packing"))) == len(header)  # aligned
    assert len(next(line for line in lines if line.startswith("soapbox"))) == len(header)
    assert (tmp_path / "vis_davis" / "bike-packing.mp4").is_file()
    assert not (tmp_path / "vis_davis" / "soapbox.mp4").exists()
    # the pictures (ground truth beside prediction, J&F in the title) leave the numbers as they are
    plain = make_hf(
        parts,
        "task=davis",
        "data.sequences=[bike-packing,soapbox]",
        "data.max_frames=3",
        "video.frame_size=256",
        "eval.save_vis=0",
        f"paths.output_dir={tmp_path / 'plain'}",
    )
    assert evaluate_video(plain, progress=False)[0] == results
    assert not (tmp_path / "plain" / "vis_davis").exists()


def test_evaluate_jhmdb(parts, tmp_path):
    data_dir("jhmdb")
    from hyperfeat.eval.runner import evaluate_video

    hf = make_hf(parts, "task=jhmdb", "data.max_frames=3", "video.frame_size=160")
    results, table = evaluate_video(hf, progress=False)
    # the pictures (truth and prediction skeletons, PCK in the title) leave the numbers as they are
    drawn = make_hf(
        parts,
        "task=jhmdb",
        "data.max_frames=3",
        "video.frame_size=160",
        "eval.save_vis=1",
        f"paths.output_dir={tmp_path}",
    )
    assert evaluate_video(drawn, progress=False)[0] == results
    assert len(list((tmp_path / "vis_jhmdb").glob("*.mp4"))) == 1
    clip = "catch/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
    for key in ("pck_bbox@0.1", "pck_bbox@0.2", f"cat/{clip}/pck_bbox@0.1", f"cat/{clip}/pck_bbox@0.2"):
        assert in_unit(results[key]), key
    assert float(results["pck_bbox@0.1"]) <= float(results["pck_bbox@0.2"])
    assert float(results["num_pairs"]) == 2  # frames 1 and 2 scored
    assert clip in table and "PCK@0.1" in table and "PCK@0.2" in table


def test_evaluate_tapvid(parts, tmp_path):
    data_dir("tapvid_davis")
    data_dir("davis2017")
    from hyperfeat.eval.metrics.tapvid import TAPVID_KEYS
    from hyperfeat.eval.runner import evaluate_video

    tables = {}
    for mode in ("first", "strided"):  # the second run reads the descriptors from the cache
        hf = make_hf(
            parts,
            "task=tapvid",
            "data.sequences=[goat]",
            "data.max_frames=3",
            f"data.query_mode={mode}",
            "data.query_stride=2",
            "video.frame_size=256",
            f"video.cache_dir={tmp_path / 'cache'}",
            "eval.save_vis=1",
            f"paths.output_dir={tmp_path}",
        )
        results, tables[mode] = evaluate_video(hf, progress=False)
        for key in TAPVID_KEYS:
            assert in_unit(results[key]), (mode, key, results[key])
        assert float(results["num_videos"]) == 1 and float(results["num_queries"]) > 0
        for key in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"):
            assert in_unit(results[f"video/goat/{key}"])
        assert "goat" in tables[mode] and f"query mode {mode}" in tables[mode] and "AJ" in tables[mode]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert (tmp_path / "vis_tapvid" / "goat.mp4").is_file()


def test_evaluate_video_rejects_other_tasks_and_data(parts):
    from hyperfeat.eval.runner import evaluate_video

    with pytest.raises(ConfigError, match="task"):
        evaluate_video(make_hf(parts), progress=False)  # task=semantic
    with pytest.raises(ConfigError, match="data.name is 'spair'"):
        evaluate_video(make_hf(parts, "task=davis", "data=spair"), progress=False)
