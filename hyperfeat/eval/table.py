"""The one table formatter of the project: every printed result table (PCK, J&F, TAP-Vid, ...)
goes through :func:`format_table`.
"""

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
    """An aligned text table of a ``PCK.compute()`` dict: one row overall, one per category, in %;
    per-keypoint (pooled) columns, then per-image columns."""
    columns = _pck_columns(results)
    cats = sorted({k[len("cat/") :].rsplit("/", 1)[0] for k in results if k.startswith("cat/")})
    n_pooled = sum(1 for *_, per_image in columns if not per_image)
    rows = []
    for label, prefix in [("all", "")] + [(c, f"cat/{c}/") for c in cats]:
        pairs, points = (int(float(results.get(prefix + k, 0))) for k in ("num_pairs", "num_points"))
        rows.append([label, str(pairs), str(points), *(_pct(results.get(prefix + key)) for key, _, _ in columns)])
    groups = [(label, n) for label, n in (("per keypoint", n_pooled), ("per image", len(columns) - n_pooled)) if n]
    split = 3 + n_pooled if 0 < n_pooled < len(columns) else None
    return format_table(["category", "pairs", "points", *(h for _, h, _ in columns)], rows, groups=groups, split=split)


# ---------------------------------------------------------------------------------------------
# tables


def _pct(value: torch.Tensor | float | None) -> str:
    """A fraction as a percentage with two decimals; ``-`` for a missing or NaN value."""
    if value is None:
        return "-"
    value = float(value)
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def format_table(
    headers: Sequence[str],
    rows: Sequence[Optional[Sequence[str]]],
    title: str = "",
    notes: Sequence[str] = (),
    groups: Sequence[tuple[str, int]] = (),
    split: Optional[int] = None,
) -> str:
    """An aligned text table: first column left-aligned, the others right-aligned; a ``None`` row
    is a rule. ``groups``: (label, number of columns) spanning the last columns, written centred
    on a line above the header; ``split``: index of the column a ``|`` separates from the one
    before it, on every line."""
    body = [list(r) for r in rows if r is not None]
    widths = [max([len(str(h))] + [len(str(r[i])) for r in body]) for i, h in enumerate(headers)]
    span_start = len(headers) - sum(n for _, n in groups)
    for label, n in groups:  # widen the columns under a label that is longer than they are
        cols = range(span_start, span_start + n)
        short = len(label) - (sum(widths[c] for c in cols) + 2 * (n - 1) + (2 if split in cols[1:] else 0))
        for c in cols:
            widths[c] += max(0, -(-short // n))
        span_start += n

    def join(cells: Sequence[str]) -> str:
        parts = [cells[0]] + [f" | {c}" if i == split else f"  {c}" for i, c in enumerate(cells[1:], start=1)]
        return "".join(parts)

    def line(cells: Sequence[str]) -> str:
        return join([f"{cells[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])])

    rule = join(["-" * w for w in widths]).replace(" | ", "-|-").replace(" ", "-")
    out = [title] if title else []
    if groups:
        cells, start = [" " * w for w in widths], len(headers) - sum(n for _, n in groups)
        spans = []
        for label, n in groups:
            span = sum(widths[start : start + n]) + 2 * (n - 1) + (2 if split in range(start + 1, start + n) else 0)
            spans.append((start, n, f"{label:^{span}}"))
            start += n
        text = join(cells)
        for first, n, label in spans:
            offset = len(join(cells[:first])) + (3 if first == split else 2)
            text = text[:offset] + label + text[offset + len(label) :]
        out.append(text.rstrip())
    out += [line(headers).rstrip(), rule]
    out += [rule if r is None else line([str(c) for c in r]).rstrip() for r in rows]
    out += list(notes)
    return "\n".join(out)
