"""``hyperfeat config show|presets``: the composed config, and the presets there are."""

from __future__ import annotations

import argparse

from hyperfeat.cli.common import add_config_args, command, with_config_file
from hyperfeat.errors import HyperfeatError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=["show", "presets"],
        help="show: print the composed config as YAML; presets: list every preset with its description",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides for show (backbone=tiny, data=cub …)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="show the inference config of these weights (their backbone, features and aggregation)",
    )
    add_config_args(p)


def _first_sentence(path) -> str:
    """The first sentence of the file's leading comment block."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def presets_text() -> str:
    """Every group's presets, one per line with its first comment line."""
    from hyperfeat.config import CONFIG_DIR, GROUPS, preset_names

    lines = []
    for group in GROUPS:
        lines.append(f"{group}=")
        names = preset_names(group)
        width = max(len(n) for n in names)
        for name in names:
            lines.append(f"  {name:<{width}}  {_first_sentence(CONFIG_DIR / group / f'{name}.yaml')}")
    return "\n".join(lines)


@command("config", "print the composed config (show [overrides]) or the presets (presets)", _config_args)
def run_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    overrides = list(args.overrides) + list(args.late_overrides)
    if args.action == "presets":
        if overrides or args.config or args.checkpoint:
            raise HyperfeatError("`hyperfeat config presets` takes no overrides, --config or --checkpoint")
        print(presets_text())
        return 0
    if args.checkpoint:
        from hyperfeat.model.checkpoint import inference_config
        from hyperfeat.model.pretrained import load_pretrained

        _, meta = load_pretrained(args.checkpoint)
        cfg = inference_config(meta, with_config_file(args.config, overrides))
    else:
        from hyperfeat.config import load_config

        cfg = load_config(args.config, overrides)
    print(annotate(OmegaConf.to_yaml(cfg), key_meanings()), end="")
    return 0


def _keyed_lines(text: str):
    """(dotted key, line index, line) of every ``key:`` line of a block-style YAML text."""
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.lstrip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        indent = len(line) - len(stripped)
        key = stripped.split(":", 1)[0].strip()
        if not key or " " in key or key.startswith(("'", '"')):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        yield ".".join(k for _, k in stack), index, line


def key_meanings() -> dict[str, str]:
    """Dotted key → its one-line meaning: the comment on the key's line in ``default.yaml``, else
    the first sentence of the comment lines right above it."""
    from hyperfeat.config import CONFIG_DIR

    lines = (CONFIG_DIR / "default.yaml").read_text().splitlines()
    meanings = {}
    for key, index, line in _keyed_lines("\n".join(lines)):
        comment = line.split(" #", 1)[1].strip() if " #" in line else ""
        if not comment:
            above = []
            for previous in reversed(lines[:index]):
                if not previous.lstrip().startswith("#") or set(previous.strip()) <= {"#", "-", " "}:
                    break
                above.insert(0, previous.lstrip("# ").strip())
            text = " ".join(above)
            comment = text[: text.find(". ") + 1] if ". " in text else text
        if comment:
            meanings[key] = comment
    return meanings


def annotate(text: str, meanings: dict[str, str]) -> str:
    """``text`` (YAML) with each key's meaning as a trailing comment (still valid YAML)."""
    lines = text.splitlines()
    for key, index, line in list(_keyed_lines(text)):
        if key in meanings and "#" not in line:
            lines[index] = f"{line}  # {meanings[key]}"
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")
