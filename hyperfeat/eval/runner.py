"""``python eval.py``: evaluate a checkpoint, print a table, write a JSON of all numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

import torch

from hyperfeat.describe.hyperfeatures import HyperfeatureDescriber
from hyperfeat.errors import ConfigError
from hyperfeat.eval.davis import evaluate_davis
from hyperfeat.eval.jhmdb import evaluate_jhmdb
from hyperfeat.eval.semantic import EvaluationInterrupted, evaluate_semantic
from hyperfeat.eval.tapvid import evaluate_tapvid
from hyperfeat.io import check_writable
from hyperfeat.model.backbone import Backbone

RANDOM_BACKBONE_NOTE = (
    "NOTE: backbone 'tiny' is a small RANDOM model: these numbers only show that the pipeline "
    "runs; they say nothing about how well diffusion hyperfeatures correspond"
)


def _jsonable(value):
    if torch.is_tensor(value):
        return value.tolist() if value.numel() > 1 else float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def evaluate(
    checkpoint: str, overrides: Sequence[str] = (), out_json: Optional[str] = None, backbone: Optional[Backbone] = None
) -> dict:
    """Evaluate ``checkpoint`` on ``cfg.task`` (and ``cfg.data`` for semantic pairs), print the
    table and write the JSON record; ``backbone`` reuses an already loaded backbone.

    The record (:func:`evaluation_record`) names the checkpoint (path and sha256), every
    override, the data preset and subset, and the software versions. Its default path is
    ``<paths.output_dir>/eval_<preset>.json``, the preset being the ``data=`` (or ``task=``) chosen,
    so ``data=spair`` and ``data=spair_native`` do not overwrite each other. Ctrl-C writes the
    results so far, marked ``"partial": true``, and raises :class:`EvaluationInterrupted`.
    """
    hf = HyperfeatureDescriber.from_checkpoint(checkpoint, overrides=overrides, backbone=backbone)
    cfg = hf.cfg
    random_backbone = str(cfg.backbone.model) == "tiny"
    if random_backbone:  # said before the progress bars too, so nobody waits for numbers that mean nothing
        print(RANDOM_BACKBONE_NOTE)
    name = output_name(cfg, overrides)
    path = Path(out_json) if out_json else Path(cfg.paths.output_dir) / f"eval_{name}.json"
    check_writable(path)  # a read-only or full destination fails now, not after the evaluation
    try:
        if cfg.task == "semantic":
            results, table = evaluate_semantic(hf)
        else:
            try:
                results, table = evaluate_video(hf)
            except KeyboardInterrupt:  # the video loops keep no running metric: nothing to keep but the fact
                raise EvaluationInterrupted({}, "", 0, 0) from None
    except EvaluationInterrupted as stop:
        record = evaluation_record(checkpoint, overrides, cfg, name, stop.results, partial=True)
        record["progress"] = {"done": stop.done, "total": stop.total}
        _write_record(path, record)
        stop.path = path
        raise
    print(table)
    if random_backbone:
        print(RANDOM_BACKBONE_NOTE)
    record = evaluation_record(checkpoint, overrides, cfg, name, results, partial=False)
    _write_record(path, record)
    print(f"wrote {path}")
    return record


def _write_record(path: Path, record: dict) -> None:
    from hyperfeat.io import atomic_write

    text = json.dumps(record, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def output_name(cfg, overrides: Sequence[str] = ()) -> str:
    """The data preset picked on the line (``data=spair_native``), else the task or data name."""
    preset = None
    for item in overrides:
        key, _, value = str(item).partition("=")
        if key.strip().lstrip("+") == "data" and value.strip():
            preset = value.strip()
    if preset is None:
        preset = str(cfg.data.name) if cfg.task == "semantic" else str(cfg.task)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", preset)


SOFTWARE = ("torch", "diffusers", "transformers", "lightning", "torchmetrics", "omegaconf", "numpy", "pillow")


def software_versions() -> dict:
    """Python, hyperfeat and the versions of the libraries the numbers depend on."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("hyperfeat",) + SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def _file_sha256(path: str) -> Optional[str]:
    import hashlib

    try:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        return hasher.hexdigest()
    except OSError:
        return None


def evaluation_record(checkpoint: str, overrides: Sequence[str], cfg, name: str, results: dict, partial: bool) -> dict:
    """The JSON record of one evaluation: what was run on what, with which software, and the numbers."""
    from omegaconf import OmegaConf

    results = dict(results)
    subset = results.pop("subset", None)
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": _file_sha256(str(checkpoint)),
        "task": str(cfg.task),
        "data": str(cfg.data.name),
        "data_preset": name,
        "backbone": str(cfg.backbone.model),
        "random_backbone": str(cfg.backbone.model) == "tiny",
        "partial": bool(partial),
        "overrides": [str(o) for o in overrides],
        "data_subset": subset,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "software": software_versions(),
        "results": _jsonable(results),
    }


VIDEO_TASKS = ("davis", "jhmdb", "tapvid")


# ---------------------------------------------------------------------------------------------
# helpers


def _check_task_data(cfg, task: str) -> None:
    """A known data preset of another task is a config mistake (task=davis with data=spair)."""
    from hyperfeat.config import preset_names

    name = str(cfg.data.get("name", ""))
    if name != task and name in preset_names("data"):
        raise ConfigError(
            f"task={task} evaluates the {task} data, but data.name is {name!r}: "
            f"drop the data= override or use data={task}"
        )


# ---------------------------------------------------------------------------------------------
# entry


def evaluate_video(hf, progress: bool = True) -> tuple[dict, str]:
    """Evaluate ``hf`` on the video task ``hf.cfg.task`` (davis | jhmdb | tapvid) over ``hf.cfg.data``.

    Returns (results, table); see the module docstring for the keys.
    """
    task = str(hf.cfg.task)
    if task not in VIDEO_TASKS:
        raise ConfigError(f"evaluate_video needs task to be one of {', '.join(VIDEO_TASKS)}; got {task!r}")
    _check_task_data(hf.cfg, task)
    run = {"davis": evaluate_davis, "jhmdb": evaluate_jhmdb, "tapvid": evaluate_tapvid}[task]
    return run(hf, progress=progress)
