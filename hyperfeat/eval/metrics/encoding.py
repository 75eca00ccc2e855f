"""Helpers the metrics share: names stored as fixed-size byte rows (so they sync across
ranks), array conversion and scalar tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from hyperfeat.errors import DataError

NAME_BYTES = 64  # longest category / sequence name, in UTF-8 bytes


# ---------------------------------------------------------------------------- shared helpers


def _encode_name(name: str, what: str) -> torch.Tensor:
    """A name as a (1, NAME_BYTES) uint8 row, zero padded."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{what} must be a non-empty string; got {name!r}")
    raw = name.encode("utf-8")
    if len(raw) > NAME_BYTES or b"\0" in raw:
        raise DataError(f"{what} {name!r} must be at most {NAME_BYTES} UTF-8 bytes without NUL")
    row = torch.zeros(1, NAME_BYTES, dtype=torch.uint8)
    row[0, : len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    return row


def _decode_names(rows: torch.Tensor) -> list[str]:
    return [bytes(r).rstrip(b"\0").decode("utf-8") for r in rows.cpu().tolist()]


def _as_numpy(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise DataError(f"{name} must be a tensor or numpy array; got {type(x).__name__}")


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float32)
