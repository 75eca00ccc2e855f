"""``python eval.py``: evaluate a checkpoint, print a table, write a JSON of all numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from hyperfeat.api import Hyperfeatures
from hyperfeat.errors import ConfigError
from hyperfeat.eval.davis import evaluate_davis
from hyperfeat.eval.jhmdb import evaluate_jhmdb
from hyperfeat.eval.semantic import evaluate_semantic
from hyperfeat.eval.tapvid import evaluate_tapvid
from hyperfeat.model.backbone import Backbone

RANDOM_BACKBONE_NOTE = ("NOTE: backbone 'tiny' is a small RANDOM model: these numbers only show that the pipeline "
                        "runs; they say nothing about how well diffusion hyperfeatures correspond")




def _jsonable(value):
    if torch.is_tensor(value):
        return value.tolist() if value.numel() > 1 else float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value




def evaluate(checkpoint: str, overrides: Sequence[str] = (), out_json: Optional[str] = None,
             backbone: Optional[Backbone] = None) -> dict:
    """Evaluate ``checkpoint`` on ``cfg.task`` (and ``cfg.data`` for semantic pairs), print the
    table and write the JSON record; ``backbone`` reuses an already loaded backbone."""
    hf = Hyperfeatures.from_checkpoint(checkpoint, overrides=overrides, backbone=backbone)
    cfg = hf.cfg
    random_backbone = str(cfg.backbone.model) == "tiny"
    if random_backbone:  # said before the progress bars too, so nobody waits for numbers that mean nothing
        print(RANDOM_BACKBONE_NOTE)
    if cfg.task == "semantic":
        results, table = evaluate_semantic(hf)
    else:

        results, table = evaluate_video(hf)
    name = cfg.data.name if cfg.task == "semantic" else cfg.task
    print(table)
    if random_backbone:
        print(RANDOM_BACKBONE_NOTE)
    path = Path(out_json) if out_json else Path(cfg.paths.output_dir) / f"eval_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(checkpoint), "task": str(cfg.task), "data": str(cfg.data.name),
              "backbone": str(cfg.backbone.model), "random_backbone": random_backbone, "results": _jsonable(results)}
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return record



VIDEO_TASKS = ("davis", "jhmdb", "tapvid")




# ---------------------------------------------------------------------------------------------
# helpers


def _check_task_data(cfg, task: str) -> None:
    """A known data preset of another task is a config mistake (task=davis with data=spair)."""
    from hyperfeat.config import preset_names

    name = str(cfg.data.get("name", ""))
    if name != task and name in preset_names("data"):
        raise ConfigError(f"task={task} evaluates the {task} data, but data.name is {name!r}: "
                          f"drop the data= override or use data={task}")




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
