"""The one reader of MATLAB ``.mat`` annotation files (PF-WILLOW keypoints, JHMDB joints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyperfeat.errors import DataError
from hyperfeat.io import PathLike


def read_mat_field(path: PathLike, field: str, what: str) -> np.ndarray:
    """The array ``field`` of the .mat file ``path`` as float64; ``what`` names the file kind in
    errors (e.g. "PF-WILLOW annotation"). A missing file, an unreadable one or a missing field is
    a :class:`DataError` naming the file and the fields it has."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises several types for bad files
        raise DataError(f"cannot read {what} file {path}: {err}") from err
    if field not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{what} file {path} has no field {field!r} (found {keys})")
    return np.asarray(mat[field], dtype=np.float64)
