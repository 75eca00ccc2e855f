"""The README's Python snippets run as written on a CPU: each ```python block (but those marked
``<!-- not run: ... -->`` for GPU users) is executed, in order, in one namespace, in a folder that
holds what the README says it needs (a checkpoint at checkpoints/last.ckpt, cat1.jpg, cat2.jpg and
clip.mp4).
A runnable block must not ask for a GPU or for weights that have to be downloaded."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_RUN = "<!-- not run"


def python_blocks(text: str) -> list[tuple[str, bool]]:
    """Every ```python block of ``text`` → (code, runnable)."""
    blocks = []
    for match in re.finditer(r"(?ms)^```python\n(.*?)^```", text):
        before = text[: match.start()].rstrip().splitlines()
        runnable = not (before and before[-1].strip().startswith(NOT_RUN))
        blocks.append((match.group(1), runnable))
    return blocks


def test_block_extraction_honours_the_not_run_mark():
    text = "x\n```python\na = 1\n```\n<!-- not run: GPU -->\n```python\nb = 2\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [("a = 1\n", True), ("b = 2\n", False)]


def test_runnable_snippets_ask_for_no_gpu_and_no_download():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert any(runnable for _, runnable in blocks)
    for code, runnable in blocks:
        if runnable:
            assert 'device="cuda"' not in code and "dhf-sd15" not in code, code


def test_readme_python_snippets_run(tmp_path, monkeypatch, make_tiny_checkpoint):
    from tests.helpers import data_dir

    images = sorted((data_dir("spair_dhf") / "images").glob("*.jpg"))[:2]
    if len(images) < 2:
        pytest.skip("two SPair images are needed as cat1.jpg and cat2.jpg")
    for name, image in zip(("cat1.jpg", "cat2.jpg"), images):
        shutil.copy(image, tmp_path / name)
    from PIL import Image

    from hyperfeat.io import write_video

    frames = sorted((data_dir("davis2017") / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:3]
    if len(frames) < 3:
        pytest.skip("three DAVIS frames are needed for clip.mp4")
    write_video([Image.open(f).convert("RGB").resize((160, 90)) for f in frames], tmp_path / "clip.mp4")
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(make_tiny_checkpoint(), tmp_path / "checkpoints" / "last.ckpt")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code, runnable in python_blocks((ROOT / "README.md").read_text()):
        if runnable:
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["desc"].shape[0] == 2 and tuple(namespace["points"].shape) == (2, 2)
    assert tuple(namespace["tracks"].shape) == (1, 3, 2)
