"""`eval.py method=NAME` without a checkpoint, `eval.py --compare` on a class-stratified PF-WILLOW
subset with every method on the tiny backbone, and the errors of bad method settings."""

import json

import pytest
import torch

from hyperfeat.cli import main
from tests.helpers import DATA_ROOT, TINY_OVERRIDES, data_dir

FAST = TINY_OVERRIDES + [
    "data=pf_willow",
    f"paths.data_root={DATA_ROOT}",
    "compare.pairs_per_category=1",
    "data.max_points=2",
    "dift.ensemble_size=2",
    "raw.maps=[[4,1,0]]",
    "ldm.steps=2",
    "ldm.num_crops=1",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_cfg, tiny_backbone):
    from hyperfeat.model.checkpoint import (
        CheckpointMeta,
        build_network,
        save_checkpoint,
    )
    from hyperfeat.model.features import FeatureExtractor

    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    torch.manual_seed(0)
    network = build_network(tiny_cfg, extractor.channels)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(path, network, CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, [4, 2, 0]))
    return path


def test_compare_prints_one_table_for_every_method(ckpt, tmp_path, capsys):
    data_dir("pf_willow")
    out = tmp_path / "compare.json"
    assert (
        main(["eval", "--compare", "--checkpoint", str(ckpt), "--out", str(out), *FAST, f"paths.output_dir={tmp_path}"])
        == 0
    )
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    categories = sorted(p.name for p in (DATA_ROOT / "pf_willow" / "PF-dataset-WILLOW").iterdir() if p.is_dir())
    assert all(f"{c}@0.1" in header for c in categories) and "s/pair" in header and "bbox@0.1" in header
    record = json.loads(out.read_text())
    assert list(record["methods"]) == ["hyperfeatures", "dift", "raw", "pruned", "ldm"]
    for name, entry in record["methods"].items():
        row = next(line for line in lines if line.split()[:1] == [name])
        assert row.split()[1:3] == ["10", "20"]  # the same 10 pairs (one per class), 2 points each
        assert 0.0 <= entry["results"]["pck_bbox@0.1"] <= 1.0 and entry["seconds_per_item"] > 0
        assert {k.split("/")[1] for k in entry["results"] if k.startswith("cat/")} == set(categories)
    assert "RANDOM" in printed and record["random_backbone"] is True


def test_training_free_method_runs_without_a_checkpoint(tmp_path, capsys):
    data_dir("pf_willow")
    out = tmp_path / "dift.json"
    assert main(["eval", "method=dift", "--out", str(out), *FAST, f"paths.output_dir={tmp_path}"]) == 0
    record = json.loads(out.read_text())
    assert record["method"] == "dift" and record["results"]["num_pairs"] == 10
    assert "RANDOM" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["method=pruned"],
            "method=pruned needs a trained checkpoint (--checkpoint CKPT); the methods without one are: dift, raw, concat, ldm",
        ),
        (["method=hyperfeatures"], "the methods without one are: dift, raw, concat, ldm"),
        (["method=ldm", "task=davis"], "valid methods for them: hyperfeatures, dift, raw, concat, pruned, patches"),
        (["method=bogus"], "method must be one of hyperfeatures, dift, raw, concat, pruned, ldm, patches"),
        (["dift.timestep=1000"], "dift.timestep must be an integer timestep in [0, 999]"),
        (["dift.ensemble_size=0"], "dift.ensemble_size must be an integer >= 1"),
        (["features.mode=noise", "features.ensemble_size=0"], "features.ensemble_size must be an integer >= 1"),
        (["features.ensemble_size=2"], "needs features.mode=noise"),
        (["method=dift", "dift.up_ft_index=7"], "valid values 0 … 3"),
    ],
)
def test_bad_method_settings_are_one_line_errors(args, expected, capsys):
    assert main(["eval", "backbone=tiny", *args]) == 2
    assert expected in capsys.readouterr().err


def test_video_comparison_table_shows_the_overall_scores():
    """DAVIS's overall J&F lives under multi_object/ and foreground/: the table must show it (and
    no per-sequence number); JHMDB's and TAP-Vid's top-level numbers as before."""
    from hyperfeat.eval.compare import video_table

    davis = {
        "multi_object/J&F": 0.5,
        "multi_object/J-Mean": 0.4,
        "foreground/J&F": 0.6,
        "seq/bike/J&F": 0.9,
        "num_sequences": 2.0,
    }
    table = video_table([("dift", davis, 1.0), ("raw", {"pck@0.1": 0.3, "num_clips": 1.0}, 2.0)], "t")
    header = table.splitlines()[[i for i, line in enumerate(table.splitlines()) if "method" in line][0]]
    for key in ("multi_object/J&F", "multi_object/J-Mean", "foreground/J&F", "pck@0.1"):
        assert key in header
    assert "seq/bike" not in table and "num_" not in table
    assert "50.00" in table and "60.00" in table and "30.00" in table


def test_compare_runs_on_the_checkpoint_backbone(ckpt, tmp_path, capsys):
    """A tiny checkpoint compares on the tiny backbone without backbone=tiny given by hand."""
    data_dir("pf_willow")
    out = tmp_path / "compare.json"
    assert (
        main(
            [
                "eval",
                "--compare",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "data=pf_willow",
                f"paths.data_root={DATA_ROOT}",
                "compare.pairs_per_category=1",
                "data.max_points=2",
                "raw.maps=[[4,1,0]]",
                "compare.methods=[hyperfeatures,raw]",
                f"paths.output_dir={tmp_path}",
            ]
        )
        == 0
    )
    record = json.loads(out.read_text())
    assert record["backbone"] == "tiny" and record["random_backbone"] is True
    assert list(record["methods"]) == ["hyperfeatures", "raw"]
