"""TODO docstring (hyperfeat.metrics, hyperfeat.video_eval)."""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import torch

_PCK_KEY = re.compile(r"^pck_(bbox|img)@([0-9.e-]+)(_per_image)?$")




def _pck_columns(results: dict) -> list[tuple[str, str, bool]]:
    """(key, header, per_image) of the overall PCK keys: pooled first, then bbox before img, by α."""
    parsed = []
    for key in results:
        m = _PCK_KEY.match(key)
        if m:
            parsed.append((bool(m.group(3)), m.group(1), float(m.group(2)), key, f"{m.group(1)}@{m.group(2)}"))
    return [(key, header, per_image) for per_image, _, _, key, header in sorted(parsed)]




def format_pck(results: dict[str, torch.Tensor | float]) -> str:
    """An aligned text table of a ``PCK.compute()`` dict: one row overall, one per category, in %."""
    columns = _pck_columns(results)
    cats = sorted({k[len("cat/") :].rsplit("/", 1)[0] for k in results if k.startswith("cat/")})
    rows = [("all", "")] + [(c, f"cat/{c}/") for c in cats]
    first = max([len("category")] + [len(c) for c, _ in rows])
    n_pooled = sum(1 for *_, per_image in columns if not per_image)
    labels = [("per keypoint", n_pooled), ("per image", len(columns) - n_pooled)]
    labels = [(label, n) for label, n in labels if n]
    width = max([8] + [len(h) for _, h, _ in columns] + [math.ceil(len(label) / n) for label, n in labels])
    lead = f"{'':<{first}} {'':>6} {'':>7}  "
    groups = [f"{label:^{(width + 1) * n - 1}}" for label, n in labels]
    header = f"{'category':<{first}} {'pairs':>6} {'points':>7}  " + _cells([h for _, h, _ in columns], width, n_pooled)
    lines = [lead + " | ".join(groups), header]
    for label, prefix in rows:
        cells = [_percent(results.get(prefix + key)) for key, _, _ in columns]
        pairs, points = (int(float(results.get(prefix + k, 0))) for k in ("num_pairs", "num_points"))
        lines.append(f"{label:<{first}} {pairs:>6} {points:>7}  " + _cells(cells, width, n_pooled))
    return "\n".join(lines)




def _percent(value: torch.Tensor | float | None) -> str:
    return "-" if value is None or math.isnan(float(value)) else f"{100 * float(value):.2f}"




def _cells(cells: list[str], width: int, split: int) -> str:
    left = " ".join(f"{c:>{width}}" for c in cells[:split])
    right = " ".join(f"{c:>{width}}" for c in cells[split:])
    return f"{left} | {right}" if right else left




# ---------------------------------------------------------------------------------------------
# tables


def _pct(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "-" if math.isnan(value) else f"{100 * value:.2f}"




def format_table(headers: Sequence[str], rows: Sequence[Optional[Sequence[str]]], title: str = "",
                 notes: Sequence[str] = ()) -> str:
    """An aligned text table: first column left-aligned, the others right-aligned; a ``None`` row
    is a rule."""
    body = [list(r) for r in rows if r is not None]
    widths = [max([len(str(h))] + [len(str(r[i])) for r in body]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first] + rest).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [title] if title else []
    out += [line(headers), rule]
    out += [rule if r is None else line([str(c) for c in r]) for r in rows]
    out += list(notes)
    return "\n".join(out)
