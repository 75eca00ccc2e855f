"""Command-line habits: --version, help with defaults on every argument, --config on every command
that takes overrides, ``hyperfeat config show|presets``, the pip extras named when missing."""

from __future__ import annotations

import argparse

import pytest
import yaml

import hyperfeat
from hyperfeat.cli import build_parser, main
from hyperfeat.config import config_file_overrides, load_config, preset_names
from tests.helpers import TINY_OVERRIDES

OVERRIDE_COMMANDS = ("extract", "convert-official", "train", "eval", "match", "track", "propagate", "config")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hyperfeat {hyperfeat.__version__}"


def test_every_argument_has_help_and_shows_its_default():
    for name, parser in subparsers().items():
        assert isinstance(parser.formatter_class, type) and issubclass(
            parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter
        ), name
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name}: {action.dest} has no help"
            shows_default = (
                action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and not action.required
            )
            if shows_default:
                assert f"(default: {action.default})" in " ".join(text.split()), f"{name} --{action.dest}"
            elif action.default is None:
                assert "(default: None)" not in text


def test_config_option_on_every_command_that_takes_overrides():
    commands = subparsers()
    for name in OVERRIDE_COMMANDS:
        options = {o for a in commands[name]._actions for o in a.option_strings}
        assert "--config" in options, name


def test_config_presets_lists_every_preset(capsys):
    assert main(["config", "presets"]) == 0
    out = capsys.readouterr().out
    for group in ("backbone", "data", "experiment"):
        assert f"{group}=" in out
        for name in preset_names(group):
            assert f"  {name} " in out
    assert "small random model with the SD block structure, built offline.\n" in out  # its first sentence


def test_config_show_composes_overrides_and_file(tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("features:\n  output_resolution: 16\n")
    assert main(["config", "show", *TINY_OVERRIDES, "aggregation.projection_dim=256", "--config", str(extra)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(extra, [*TINY_OVERRIDES, "aggregation.projection_dim=256"])
    assert shown["backbone"]["model"] == "tiny" and shown["aggregation"]["projection_dim"] == 256
    assert shown["features"]["output_resolution"] == 16
    assert shown["features"]["save_steps"] == list(expected.features.save_steps)
    assert main(["config", "show", "features.no_such_key=1"]) == 2


def test_config_file_as_overrides_equals_loading_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "defaults:\n  backbone: tiny\nfeatures:\n  save_steps: [3, 1]\n  num_steps: 4\n"
        "  prompt: 'a photo'\nvideo:\n  cache_dir: null\n"
    )
    as_items = config_file_overrides(path)
    assert as_items[0] == "backbone=tiny"
    assert load_config(overrides=as_items) == load_config(path)


def test_checkpoint_commands_take_config_files(tmp_path, capsys):
    """`config show --checkpoint`: the checkpoint's features, then the file, then overrides."""
    import torch

    from hyperfeat.model.checkpoint import (
        CheckpointMeta,
        build_network,
        save_checkpoint,
    )

    cfg = load_config(overrides=TINY_OVERRIDES)
    dims = [64] * 9 + [32] * 3
    layers = [(i, j) for i in range(4) for j in range(3)]
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "t.ckpt", build_network(cfg, dims), CheckpointMeta(cfg, dims, layers, [4, 2, 0]))
    extra = tmp_path / "extra.yaml"
    extra.write_text("video:\n  frame_size: 96\neval:\n  batch_size: 3\n")
    assert (
        main(["config", "show", "--checkpoint", str(tmp_path / "t.ckpt"), "--config", str(extra), "eval.batch_size=5"])
        == 0
    )
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["features"]["save_steps"] == [4, 2, 0] and shown["backbone"]["model"] == "tiny"
    assert shown["video"]["frame_size"] == 96 and shown["eval"]["batch_size"] == 5


def test_missing_extra_is_named(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchmetrics" else real(name, *a)
    )
    assert main(["eval", "--checkpoint", "x.ckpt", *TINY_OVERRIDES]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: evaluation needs torchmetrics") and "pip install 'hyperfeat[train]'" in err


def test_config_show_gives_every_key_its_one_line_meaning(capsys):
    """Each key of ``config show`` carries its default and its meaning (the comment of
    ``default.yaml``), and the output stays YAML that loads back to the same config."""
    from omegaconf import OmegaConf

    from hyperfeat.cli.config import _keyed_lines, key_meanings

    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == OmegaConf.to_container(load_config(), resolve=True)
    meanings = key_meanings()
    leaves = [key for key, _, line in _keyed_lines(out) if line.split(":", 1)[1].split("#")[0].strip()]
    missing = [key for key in leaves if key not in meanings]
    assert not missing, f"keys of default.yaml without a one-line meaning: {missing}"
    assert "  lr: 0.001  # AdamW learning rate (aggregation network only)" in out
    assert "preprocess: dift  # dift: the image resized straight to image_size²" in out
