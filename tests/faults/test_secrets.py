"""Secrets in configs: a config read from a file never reads this machine's environment.

A received checkpoint, ``config.json`` or ``.safetensors`` holds its config resolved, so a
``${…}`` in one was put there by hand; a ``--config`` YAML file may refer to other keys but
call no resolver. Each is refused with one line naming the file and the key, and the secret
is written nowhere."""

from __future__ import annotations

import json

import pytest
import torch

from hyperfeat.cli import main
from hyperfeat.config import load_config
from hyperfeat.errors import ConfigError
from hyperfeat.io import safe_torch_load
from hyperfeat.model.pretrained import load_pretrained, save_pretrained

SECRET = "s3cr3t-token-value"


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    return SECRET


@pytest.fixture(scope="module")
def tiny_ckpt(make_tiny_checkpoint):
    return make_tiny_checkpoint()


def with_config(ckpt_path, target, block: str, key: str, value: str):
    ckpt = safe_torch_load(ckpt_path)
    ckpt["hyperfeat"]["config"][block][key] = value
    torch.save(ckpt, target)
    return target


@pytest.mark.parametrize("block, key", [("backbone", "model"), ("train", "lr"), ("data", "root")])
def test_export_refuses_a_checkpoint_whose_config_reads_the_environment(
    tmp_path, tiny_ckpt, secret, capsys, block, key
):
    bad = with_config(tiny_ckpt, tmp_path / "received.ckpt", block, key, "${oc.env:SECRET_TOKEN}")
    out = tmp_path / "exported"
    assert main(["export", str(bad), str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith(f"error: checkpoint {bad}: {block}.{key} holds an interpolation")
    assert secret not in captured.out + err
    assert not out.exists(), "nothing is written"


def test_a_plain_checkpoint_still_exports_and_nothing_holds_the_secret(tmp_path, tiny_ckpt, secret):
    out = tmp_path / "ok"
    assert main(["export", str(tiny_ckpt), str(out)]) == 0
    for name in ("config.json", "README.md", "model.safetensors"):
        assert SECRET.encode() not in (out / name).read_bytes()


def test_config_json_and_safetensors_metadata_are_not_resolved(tmp_path, tiny_ckpt, secret):
    folder = save_pretrained(tmp_path / "saved", *load_pretrained(tiny_ckpt), card=False)
    record = json.loads((folder / "config.json").read_text())
    record["config"]["features"]["mode"] = "${oc.env:SECRET_TOKEN}"
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=rf"{folder / 'config.json'}: features.mode holds an interpolation"):
        load_pretrained(folder)

    from safetensors.torch import load_file, save_file

    lone = tmp_path / "lone.safetensors"
    record["config"]["features"]["mode"] = "inversion"
    record["config"]["backbone"]["model"] = "${oc.env:SECRET_TOKEN}"
    save_file(load_file(str(folder / "model.safetensors")), str(lone), metadata={"hyperfeat": json.dumps(record)})
    with pytest.raises(ConfigError, match=rf"{lone}: backbone.model holds an interpolation") as refused:
        load_pretrained(lone)
    assert SECRET not in str(refused.value)


def test_a_config_file_may_refer_to_keys_but_call_no_resolver(tmp_path, secret, capsys):
    bad = tmp_path / "received.yaml"
    bad.write_text("paths:\n  output_dir: ${oc.env:SECRET_TOKEN}\n")
    with pytest.raises(ConfigError, match=rf"{bad}: paths.output_dir holds a resolver call"):
        load_config(bad, ["backbone=tiny"])
    assert main(["config", "show", "--config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err and captured.err.count("\n") == 1

    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  monitor: 'x${oc.decode:${oc.env:SECRET_TOKEN}}'\n")
    with pytest.raises(ConfigError, match="train.monitor holds a resolver call"):
        load_config(nested)

    fine = tmp_path / "fine.yaml"
    fine.write_text("paths:\n  output_dir: ${paths.data_root}/runs\n")
    cfg = load_config(fine, ["paths.data_root=/data"])
    assert cfg.paths.output_dir == "/data/runs"


def test_the_packaged_defaults_still_read_their_own_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERFEAT_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert load_config().paths.data_root == str(tmp_path / "elsewhere")


def test_a_checkpoint_config_is_refused_on_resume_too(tmp_path, tiny_ckpt, secret):
    from hyperfeat.train.trainer import check_resume

    bad = with_config(tiny_ckpt, tmp_path / "last.ckpt", "backbone", "model", "${oc.env:SECRET_TOKEN}")
    with pytest.raises(ConfigError, match=r"backbone.model holds an interpolation"):
        check_resume(load_config(overrides=["backbone=tiny"]), bad)
