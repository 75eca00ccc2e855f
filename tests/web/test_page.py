"""The web page (``hyperfeat serve``) driven in a real headless Chromium through Selenium.

The server runs in a thread on a free localhost port with a tiny checkpoint built here. A click
in Match must give the point ``Hyperfeatures.match`` gives for the same images and source point
(and the source point must be where the click was, through the letterboxed canvas); an uploaded
GIF clip in Track must give back a tracks file equal to ``Hyperfeatures.track``; a non-image, a
click outside the picture and an empty video must each show a readable one-line message.

A screenshot of each tab goes into the test's tmp folder; with ``HYPERFEAT_DOCS_SCREENSHOTS=1``
also into ``docs/images/`` (the README's pictures).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from hyperfeat.api import Hyperfeatures
from hyperfeat.io import write_video

CHROMEDRIVER = Path(os.environ.get("HYPERFEAT_CHROMEDRIVER", "/usr/bin/chromedriver"))  # the system driver
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SRC_WH, TGT_WH = (160, 96), (72, 120)
CANVAS_WH = (420, 340)  # the page's canvases (index.html)
CLIP_WH, CLIP_FRAMES = (64, 48), 4

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not CHROMEDRIVER.exists() or not any(shutil.which(b) for b in BROWSERS):
    pytest.skip(
        f"chromium and chromium-driver are not installed ({CHROMEDRIVER} or the chromium browser is "
        f"missing; apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from hyperfeat.web import WebApp, make_server  # noqa: E402
from tests.helpers import picture  # noqa: E402


@pytest.fixture(scope="module")
def hf(make_tiny_checkpoint, tiny_backbone):
    path = make_tiny_checkpoint(seed=0, randomise_mixing=True)  # not uniform: the mixing tab has something to show
    return Hyperfeatures.from_checkpoint(path, device="cpu", backbone=tiny_backbone)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web-files")
    picture(SRC_WH, 1).save(folder / "src.png")
    picture(TGT_WH, 2).save(folder / "tgt.png")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "empty.mp4").write_bytes(b"")
    base = picture(CLIP_WH, 3)  # a short clip: the picture sliding right by 2 px a frame
    frames = [
        base.transform(CLIP_WH, Image.AFFINE, (1, 0, -2 * t, 0, 1, 0), resample=Image.BILINEAR)
        for t in range(CLIP_FRAMES)
    ]
    write_video(frames, folder / "clip.gif", fps=5)
    examples = folder / "examples" / "pair"
    examples.mkdir(parents=True)
    picture(SRC_WH, 1).save(examples / "a.png")
    picture(TGT_WH, 2).save(examples / "b.jpg")
    return folder


@pytest.fixture(scope="module")
def server(hf, files, tmp_path_factory):
    app = WebApp(hf, title="tiny.ckpt", work_dir=tmp_path_factory.mktemp("web-work"), examples=files / "examples")
    httpd = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    app.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1120,800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    options.binary_location = binary
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(server, browser):
    _, url = server
    browser.get(url + "/")
    WebDriverWait(browser, 10).until(lambda d: "timesteps" in d.find_element(By.ID, "info").text)
    return browser


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"web_{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("HYPERFEAT_DOCS_SCREENSHOTS"):
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / path.name)
    return path


def wait_for(driver, condition, timeout: float = 30.0):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def message(driver, panel: str) -> str:
    return driver.find_element(By.ID, f"{panel}-message").text


def upload(driver, input_id: str, *paths: Path) -> None:
    driver.find_element(By.ID, input_id).send_keys("\n".join(str(p) for p in paths))


def click_at_pixel(driver, canvas_id: str, xy: tuple[float, float], image_wh: tuple[int, int]) -> tuple[float, float]:
    """Click the canvas where pixel ``xy`` of the letterboxed image is shown; returns the image
    point that the click really hit (offsets are whole CSS pixels from the canvas centre)."""
    cw, ch = CANVAS_WH
    w, h = image_wh
    s = min(cw / w, ch / h)
    ox, oy = (cw - w * s) / 2, (ch - h * s) / 2
    dx, dy = round(ox + (xy[0] + 0.5) * s - cw / 2), round(oy + (xy[1] + 0.5) * s - ch / 2)
    canvas = driver.find_element(By.ID, canvas_id)
    ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).click().perform()
    return (cw / 2 + dx - ox) / s - 0.5, (ch / 2 + dy - oy) / s - 0.5


# ---------------------------------------------------------------------------- Match


def test_match_click_gives_the_api_match(page, hf, files, tmp_path):
    upload(page, "src-file", files / "src.png")
    upload(page, "tgt-file", files / "tgt.png")
    wait_for(
        page,
        lambda d: all(
            d.find_element(By.ID, c).get_attribute("data-ready") == "1" for c in ("src-canvas", "tgt-canvas")
        ),
    )
    scale = min(CANVAS_WH[0] / SRC_WH[0], CANVAS_WH[1] / SRC_WH[1])  # canvas px per image px
    for wanted in [(130.0, 30.0)]:
        hit = click_at_pixel(page, "src-canvas", wanted, SRC_WH)
        result = page.find_element(By.ID, "match-result")

        def answered(d, hit=hit):
            shown = result.get_attribute("data-source")
            return (
                bool(message(d, "match"))
                or bool(shown)
                and json.loads(shown) == pytest.approx(list(hit), abs=0.6 / scale)
            )

        wait_for(page, answered)
        assert message(page, "match") == ""
        source = json.loads(result.get_attribute("data-source"))
        target = torch.tensor(json.loads(result.get_attribute("data-target")))
        # the click maps through the letterbox (within the sub-pixel of where the element lies)
        assert source == pytest.approx(hit, abs=0.6 / scale)
        assert abs(source[0] - wanted[0]) <= 0.5 and abs(source[1] - wanted[1]) <= 0.5
        expected = hf.match(files / "src.png", files / "tgt.png", [source])[0]  # (2,)
        torch.testing.assert_close(target, expected, rtol=0, atol=1e-4)
        mutual = result.get_attribute("data-mutual")  # the flag itself is tested with the API
        assert mutual in ("true", "false") and ("yes" if mutual == "true" else "no") in result.text
        assert "→" in result.text
    shot = screenshot(page, tmp_path, "match")
    assert Image.open(shot).size[0] > 800


def test_match_bad_input_shows_a_readable_message(page, server, files):
    upload(page, "src-file", files / "notes.txt")
    wait_for(page, lambda d: message(d, "match"))
    text = message(page, "match")
    assert "notes.txt is not an image" in text and "Traceback" not in text and str(server[0].work_dir) not in text

    upload(page, "src-file", files / "src.png")
    upload(page, "tgt-file", files / "tgt.png")
    wait_for(
        page,
        lambda d: (
            d.find_element(By.ID, "tgt-canvas").get_attribute("data-ready") == "1"
            and d.find_element(By.ID, "src-canvas").get_attribute("data-ready") == "1"
        ),
    )
    canvas = page.find_element(By.ID, "src-canvas")  # 160×96 in 420×340: bands above and below
    ActionChains(page).move_to_element_with_offset(canvas, 0, -CANVAS_WH[1] // 2 + 5).click().perform()
    wait_for(page, lambda d: message(d, "match"))
    text = message(page, "match")
    assert "outside the 160×96 source image" in text and "Traceback" not in text
    assert page.find_element(By.ID, "match-result").text == ""


def test_match_examples_from_the_examples_folder(page):
    from selenium.webdriver.support.ui import Select

    for side, name, size in [("src", "pair/a.png", SRC_WH), ("tgt", "pair/b.jpg", TGT_WH)]:
        select = page.find_element(By.ID, f"{side}-example")
        assert select.is_displayed()
        Select(select).select_by_value(name)
        wait_for(page, lambda d: d.find_element(By.ID, f"{side}-canvas").get_attribute("data-ready") == "1")
        assert f"{name} ({size[0]}×{size[1]})" in page.find_element(By.ID, f"{side}-caption").text
    assert message(page, "match") == ""


# ---------------------------------------------------------------------------- Track


def test_track_clip_returns_the_api_tracks(page, server, hf, files, tmp_path):
    _, url = server
    page.find_element(By.ID, "tab-track").click()
    upload(page, "video-file", files / "clip.gif")
    wait_for(page, lambda d: d.find_element(By.ID, "video-canvas").get_attribute("data-ready") == "1")
    assert f"{CLIP_FRAMES} frames, {CLIP_WH[0]}×{CLIP_WH[1]}" in page.find_element(By.ID, "video-caption").text
    hits = [click_at_pixel(page, "video-canvas", xy, CLIP_WH) for xy in [(20.0, 15.0), (45.0, 30.0)]]
    page.find_element(By.ID, "track-run").click()
    wait_for(page, lambda d: d.find_elements(By.ID, "download-json") or message(d, "track"), timeout=40)
    assert message(page, "track") == ""
    with urllib.request.urlopen(page.find_element(By.ID, "download-json").get_attribute("href")) as response:
        record = json.load(response)
    queries = torch.tensor(record["queries"])  # (N, 3) (t, x, y) as the page sent them
    scale = min(CANVAS_WH[0] / CLIP_WH[0], CANVAS_WH[1] / CLIP_WH[1])
    torch.testing.assert_close(queries[:, 1:], torch.tensor(hits, dtype=queries.dtype), rtol=0, atol=0.6 / scale)
    assert (queries[:, 0] == 0).all()
    # the page describes the frames in memory and tracks on those descriptors: so does the API here
    described = hf.describe_video(files / "clip.gif")  # (T, D, R, R)
    tracks, visible = hf.track(files / "clip.gif", queries, descriptors=described)  # (N, T, 2), (N, T)
    assert tuple(tracks.shape) == (2, CLIP_FRAMES, 2)
    torch.testing.assert_close(torch.tensor(record["tracks"]), tracks, rtol=0, atol=0.05)
    assert torch.tensor(record["visible"]).tolist() == visible.tolist()
    # hf.track(file) describes through the float16 descriptor store: a near-tie may fall to the next cell
    stored, _ = hf.track(files / "clip.gif", queries)
    cell = max(CLIP_WH) / described.shape[-1]
    assert (stored - tracks).abs().max() <= 1.5 * cell
    with urllib.request.urlopen(page.find_element(By.ID, "download-csv").get_attribute("href")) as response:
        assert len(response.read().decode().strip().splitlines()) == 1 + 2 * CLIP_FRAMES
    wait_for(page, lambda d: d.execute_script("return document.getElementById('track-video').naturalWidth") > 0)
    shot = screenshot(page, tmp_path, "track")
    assert Image.open(shot).size[0] > 800


def test_track_without_video_or_points_says_what_to_do(page, files):
    page.find_element(By.ID, "tab-track").click()
    page.find_element(By.ID, "track-run").click()
    wait_for(page, lambda d: message(d, "track"))
    assert "upload a video" in message(page, "track")
    upload(page, "video-file", files / "clip.gif")
    wait_for(page, lambda d: d.find_element(By.ID, "video-canvas").get_attribute("data-ready") == "1")
    page.find_element(By.ID, "track-run").click()
    wait_for(page, lambda d: message(d, "track"))
    assert "click points on the first frame" in message(page, "track")


def test_track_empty_video_shows_a_readable_message(page, files):
    page.find_element(By.ID, "tab-track").click()
    upload(page, "video-file", files / "empty.mp4")
    wait_for(page, lambda d: message(d, "track"))
    text = message(page, "track")
    assert text.startswith("empty video: empty.mp4") and "Traceback" not in text


# ---------------------------------------------------------------------------- Mixing weights


def test_mixing_tab_shows_the_checkpoint_heat_map(page, server, tmp_path):
    app, url = server
    page.find_element(By.ID, "tab-mixing").click()
    wait_for(page, lambda d: d.execute_script("return document.getElementById('mixing-img').naturalWidth") > 0)
    width = page.execute_script("return document.getElementById('mixing-img').naturalWidth")
    assert width == Image.open(io.BytesIO(app.mixing_png())).size[0]
    screenshot(page, tmp_path, "mixing")
