"""The page (``hyperfeat serve``) on 127.0.0.1: only its user can drive it, and no request can
make it hold unbounded memory or disk.

Requests are written byte by byte on a socket, so the headers are exactly the ones a foreign
page, a rebound DNS name or a broken client would send."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from hyperfeat.config import load_config
from hyperfeat.web import WebApp, make_server
from hyperfeat.web.jobs import JobRunner, wait
from tests.helpers import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
BOUNDARY = "b0undary"


@pytest.fixture(scope="module")
def hf():
    """Uploads and their checks need only the config (frame size): no model is loaded."""
    return SimpleNamespace(cfg=load_config(overrides=TINY_OVERRIDES + ["video.frame_size=32"]))


@pytest.fixture
def page(hf, tmp_path):
    app = WebApp(hf, title="t", work_dir=tmp_path / "work")
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, server.server_address[1]
    server.shutdown()
    server.server_close()
    app.close()


def png_bytes(size=(8, 6), colour=(200, 30, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]], kind: str = "image") -> bytes:
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="kind"\r\n\r\n{kind}\r\n'.encode()
    for name, data in files:
        body += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{BOUNDARY}--\r\n".encode()


def request(
    port: int,
    method: str,
    path: str,
    headers: dict,
    body: bytes = b"",
    host: str | None = None,
    send_length: bool = True,
    shut: bool = False,
) -> tuple[int, dict]:
    """Send exactly these headers (Host defaults to the served one) and return (status, JSON body)."""
    head = {"Host": host if host is not None else f"127.0.0.1:{port}", "Connection": "close", **headers}
    if send_length and "Content-Length" not in headers and method == "POST":
        head["Content-Length"] = str(len(body))
    text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    return send(port, text.encode("latin-1") + body, shut)


def send(port: int, raw: bytes, shut: bool = False) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, {"raw": payload[:100]}


def upload(port: int, files, kind: str = "image", **headers) -> tuple[int, dict]:
    return request(
        port,
        "POST",
        "/api/upload",
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **headers},
        multipart(files, kind),
    )


def stored(app: WebApp) -> list[str]:
    return sorted(p.name for p in app.work_dir.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- host and origin


def test_a_foreign_host_reads_nothing_and_the_served_names_do(page):
    app, port = page
    status, reply = upload(port, [("cat.png", png_bytes())])
    assert status == 200, reply
    image = f"/api/image/{reply['id']}"
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"):
        status, reply = request(port, "GET", image, {}, host=host)
        assert status == 421 and "answers only to" in reply["error"], (host, reply)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert request(port, "GET", image, {}, host=host)[0] == 200, host


def test_cross_origin_requests_are_refused_and_store_nothing(page):
    app, port = page
    before = stored(app)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://localhost:{port}"},  # another origin than the Host it names
        {"Sec-Fetch-Site": "cross-site"},
    ):
        status, reply = upload(port, [("cat.png", png_bytes())], **headers)
        assert status == 403 and "refused" in reply["error"], (headers, reply)
    assert stored(app) == before and not app.uploads
    status, _ = request(port, "GET", "/api/examples", {"Origin": "http://evil.example"})
    assert status == 403
    # the page itself: same origin, or a client that sends none
    assert upload(port, [("cat.png", png_bytes())], Origin=f"http://127.0.0.1:{port}")[0] == 200
    assert upload(port, [("cat.png", png_bytes())], **{"Sec-Fetch-Site": "same-origin"})[0] == 200


# ---------------------------------------------------------------------------- lengths and memory


@pytest.mark.parametrize(
    "length, status, words",
    [
        ("-1", 400, "non-negative integer"),
        ("abc", 400, "non-negative integer"),
        ("1e3", 400, "non-negative"),
        (str(600 * 2**20), 413, "too large"),
        (None, 411, "needs a Content-Length"),
    ],
)
def test_bad_or_oversized_lengths_are_4xx_before_any_body_is_read(page, length, status, words):
    app, port = page
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if length is not None:
        headers["Content-Length"] = length
    got, reply = request(port, "POST", "/api/upload", headers, b"x" * 64, send_length=False)
    assert got == status and words in reply["error"], reply
    assert not stored(app)
    got, reply = request(
        port, "POST", "/api/match", dict(headers, **{"Content-Type": "application/json"}), b"{}", send_length=False
    )
    assert got == status, reply


def test_chunked_bodies_and_truncated_bodies_are_4xx(page):
    app, port = page
    status, reply = request(
        port, "POST", "/api/upload", {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n", send_length=False
    )
    assert status == 411
    status, reply = request(
        port,
        "POST",
        "/api/upload",
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": "1000"},
        b"short",
        send_length=False,
        shut=True,
    )
    assert status == 400 and "ended after 5 of 1000 bytes" in reply["error"]
    assert not stored(app), "the half-received body is removed"


def test_an_upload_is_streamed_to_disk_not_held_in_memory(page):
    app, port = page
    body = multipart([("big.png", os.urandom(24 * 2**20))])  # 24 MiB: not an image, refused once received
    raw = (
        f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    tracemalloc.start()  # Python allocations of every thread, the server's included
    try:
        status, reply = send(port, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 400 and "not an image" in reply["error"]
    assert peak < 8 * 2**20, f"the server held {peak / 2**20:.0f} MiB for a 24 MiB upload"
    assert not stored(app), "a refused upload leaves no file"


@pytest.mark.parametrize(
    "body, words",
    [
        (b"--other\r\n\r\n", "boundary never occurs"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc'.encode(),
            "before the last part is closed",
        ),
        (f"--{BOUNDARY}xx".encode(), "not followed by a line break"),
    ],
)
def test_malformed_multipart_is_400_not_500(page, body, words):
    _, port = page
    status, reply = request(
        port, "POST", "/api/upload", {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, body
    )
    assert status == 400 and words in reply["error"], reply
    status, reply = request(port, "POST", "/api/upload", {"Content-Type": "text/plain"}, b"hello")
    assert status == 400 and "multipart/form-data" in reply["error"]


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/api/match", b"[1, 2]", "JSON object"),
        ("/api/match", b"\xff\xfe", "must be JSON"),
        ("/api/track", b'{"video": "upload-1", "points": "abc"}', "points must be a list"),
        ("/api/track", b'{"video": "upload-1", "points": [[1, "x"]]}', "points must be a list"),
        ("/api/track", b'{"video": "upload-1", "points": [[1, 2]], "grid": "many"}', "grid must be an integer"),
        ("/api/track", b'{"video": "upload-1", "points": [[1, 2]], "tail_length": -4}', "tail_length must be"),
    ],
)
def test_malformed_json_requests_are_400_not_500(page, path, body, words):
    app, port = page
    frames = [(f"{i:03d}.png", png_bytes(colour=(10 * i, 0, 0))) for i in range(3)]
    assert upload(port, frames, kind="video")[0] == 200
    status, reply = request(port, "POST", path, {"Content-Type": "application/json"}, body)
    assert status == 400 and words in reply["error"], reply


def test_videos_are_cut_at_web_max_frames(page):
    app, port = page
    app.max_frames = 3
    frames = [(f"{i:03d}.png", png_bytes(colour=(10 * i, 0, 0))) for i in range(5)]
    status, reply = upload(port, frames, kind="video")
    assert status == 413 and "5 frames is more than the page takes (web.max_frames = 3)" in reply["error"]
    from hyperfeat.io import write_video

    clip = app.work_dir.parent / "clip.gif"
    write_video([Image.new("RGB", (16, 12), (40 * i, 0, 0)) for i in range(5)], clip, fps=5)
    status, reply = upload(port, [("clip.gif", clip.read_bytes())], kind="video")
    assert status == 413 and "more than 3 frames" in reply["error"], reply
    assert upload(port, frames[:3], kind="video")[0] == 200
    assert not any(p.name.startswith(".incoming") for p in app.work_dir.iterdir())


def test_only_the_last_uploads_are_kept_with_their_files(page):
    app, port = page
    app.keep_uploads = 2
    ids = [upload(port, [(f"c{i}.png", png_bytes(colour=(i, i, i)))])[1]["id"] for i in range(4)]
    assert list(app.uploads) == ids[2:]
    assert request(port, "GET", f"/api/image/{ids[0]}", {})[0] == 404
    assert request(port, "GET", f"/api/image/{ids[3]}", {})[0] == 200
    assert sorted(p.name for p in app.work_dir.iterdir() if p.name.startswith("upload-")) == ids[2:]


def test_only_the_last_videos_are_held_in_memory(page):
    app, port = page
    app.keep_uploads, app.keep_videos = 5, 2
    frames = [(f"{i:03d}.png", png_bytes(colour=(10 * i, 0, 0))) for i in range(2)]
    videos = [upload(port, frames, kind="video")[1]["id"] for _ in range(3)]
    image = upload(port, [("c.png", png_bytes())])[1]["id"]
    assert list(app.uploads) == [*videos[1:], image], "the oldest video goes, the image stays"
    assert not (app.work_dir / videos[0]).exists()


def test_only_the_last_finished_jobs_are_kept():
    forgotten = []
    runner = JobRunner(keep=2, forget=forgotten.append)
    jobs = [runner.submit("match", lambda job, i=i: {"i": i}) for i in range(4)]
    for job in jobs:
        wait(job, timeout=10)
    runner.shutdown()
    assert [runner.get(j.id) is not None for j in jobs] == [False, False, True, True]
    assert [j.id for j in forgotten] == [jobs[0].id, jobs[1].id]


# ---------------------------------------------------------------------------- cleanup on exit

SERVE = """
import sys
from types import SimpleNamespace
from hyperfeat.config import load_config
from hyperfeat.web import WebApp, serve_forever
app = WebApp(SimpleNamespace(cfg=load_config(overrides=["backbone=tiny"])))
(app.work_dir / "upload-1").mkdir()
(app.work_dir / "upload-1" / "users-photo.png").write_bytes(b"private")
print(app.work_dir, flush=True)
serve_forever(app, port=0)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_upload_folder_is_removed_on_sigterm_and_ctrl_c(signum):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    # started as from a terminal: a test run in the background (nohup, `&`) ignores SIGINT, and a
    # child inherits that (Python then installs no Ctrl-C handler, as it should for a nohup'd server)
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        work = Path(proc.stdout.readline().strip())
        assert (work / "upload-1" / "users-photo.png").is_file()
        deadline = time.monotonic() + 30
        while "hyperfeat page at" not in proc.stdout.readline() and time.monotonic() < deadline:
            pass
        proc.send_signal(signum)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert not work.exists(), "the users' files stay behind"
