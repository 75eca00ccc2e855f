"""What the evaluation loops share: where pictures go and how files are named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional


def _safe_file_name(name: str) -> str:
    """``Cars_006a-Cars_007a:car(G)`` → ``Cars_006a-Cars_007a_car_G``: portable file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "pair"


VIS_FPS = 10


VIS_MAX_TRACKS = 40  # TAP-Vid pictures: at most this many query tracks (evenly spaced)


def _frame_size(cfg) -> Optional[int]:
    size = cfg.video.get("frame_size")
    return int(size) if size else None


def _vis_dir(cfg, task: str) -> Path:
    return Path(str(cfg.paths.output_dir)) / f"vis_{task}"


def _safe_name(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_")


def _prefixed(results: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in results.items()}
