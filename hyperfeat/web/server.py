"""The HTTP side of the page: uploads, jobs and files, on :mod:`http.server` (standard library).

Routes (JSON unless said otherwise):

* ``GET /`` the page; ``GET /static/<file>`` its script and style.
* ``GET /api/info``: checkpoint, backbone, match methods; ``GET /api/examples`` the example
  images (``hyperfeat serve --examples DIR``), ``POST /api/example {name}`` picks one as an
  upload; ``GET /api/image/<id>`` an image upload's bytes.
* ``POST /api/upload?kind=image|video`` (multipart ``file`` fields): an image is decoded at
  once and refused with a readable message when it is not one; a video is one video file or
  several frame images, decoded with :func:`hyperfeat.video.frames.load_frames`. Returns an
  ``id`` and the size (and, for a video, the frame count and a first-frame preview).
* ``POST /api/match`` ``{source, target, x, y, method}`` and ``POST /api/track``
  ``{video, points: [[x, y], ...], grid, tail_length}`` start a job; ``GET /api/jobs/<id>``
  says how far it is (``progress`` in [0, 1], ``stage``) and holds its result or error.
* ``GET /files/<job>/<name>``: what a track job wrote (``tracks.gif``, ``.json``, ``.csv``).
* ``GET /api/mixing.png``: the checkpoint's mixing weights.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import shutil
import tempfile
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

from hyperfeat.errors import HyperfeatError, ImageError
from hyperfeat.io import FRAME_SUFFIXES
from hyperfeat.web import work
from hyperfeat.web.jobs import JobRunner

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
MAX_EXAMPLES = 500
METHODS = ("nn", "mutual_nn", "soft_argmax")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}


class BadRequest(HyperfeatError):
    """A request the page should not have sent (missing field, unknown id)."""


def safe_name(name: str, fallback: str) -> str:
    """A file name without folders or odd characters (the uploaded name, for messages)."""
    stem = Path(str(name or "")).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return stem or fallback


class WebApp:
    """State of one served page: the loaded model, the uploads and the jobs."""

    def __init__(self, hf, title: str = "hyperfeat", work_dir: Optional[Path] = None,
                 examples: Optional[Path] = None):
        self.hf = hf
        self.title = title
        self.examples = self._list_examples(examples) if examples else {}
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="hyperfeat-web-"))
        self.uploads: dict[str, dict] = {}
        self._count = 0
        self._lock = threading.Lock()
        self.jobs = JobRunner(clean=self.clean)
        self.match_descriptors: dict = {}
        self._mixing: Optional[bytes] = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _list_examples(folder: Path) -> dict[str, Path]:
        """Images below ``folder`` (recursively, sorted, the first MAX_EXAMPLES), by relative name."""
        from hyperfeat.io import list_image_files

        root = Path(folder)
        files = list_image_files(root)[:MAX_EXAMPLES]  # ImageError names a missing or empty folder
        return {str(f.relative_to(root)): f for f in files}

    def use_example(self, name: str) -> dict:
        from hyperfeat.images import load_image

        path = self.examples.get(str(name))
        if path is None:
            raise BadRequest(f"no example image {name!r}")
        image = load_image(path)
        upload_id, _ = self._new_upload_dir()
        self.uploads[upload_id] = {"kind": "image", "path": path, "size": image.size}
        return {"id": upload_id, "name": str(name), "width": image.size[0], "height": image.size[1]}

    def image_file(self, upload_id: str) -> Optional[Path]:
        item = self.uploads.get(upload_id)
        return item["path"] if item is not None and item["kind"] == "image" else None

    def clean(self, message: str) -> str:
        """Drop the server's folders from a message, so it names the uploaded file alone."""
        text = str(message).replace(str(self.work_dir) + "/", "").replace(str(self.work_dir), "")
        text = re.sub(r"upload-\d+/", "", text)
        return text.splitlines()[0] if text else "failed"

    def _new_upload_dir(self) -> tuple[str, Path]:
        with self._lock:
            self._count += 1
            upload_id = f"upload-{self._count}"
        folder = self.work_dir / upload_id
        folder.mkdir(parents=True)
        return upload_id, folder

    def upload(self, kind: str, files: list[tuple[str, bytes]]) -> dict:
        if kind not in ("image", "video"):
            raise BadRequest(f"upload kind must be 'image' or 'video'; got {kind!r}")
        if not files:
            raise BadRequest("no file in the upload")
        upload_id, folder = self._new_upload_dir()
        try:
            return self._image(upload_id, folder, files) if kind == "image" else self._video(upload_id, folder, files)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _image(self, upload_id: str, folder: Path, files: list[tuple[str, bytes]]) -> dict:
        from hyperfeat.images import load_image

        if len(files) != 1:
            raise BadRequest(f"give one image; got {len(files)} files")
        name, data = files[0]
        path = folder / safe_name(name, "image")
        if not data:
            raise ImageError(f"{path.name} is empty (0 bytes); expected an image (PNG, JPEG, ...)")
        path.write_bytes(data)
        try:
            image = load_image(path)
        except ImageError as err:
            raise ImageError(f"{path.name} is not an image the page can read; upload a PNG, JPEG or other "
                             f"image file") from err
        self.uploads[upload_id] = {"kind": "image", "path": path, "size": image.size}
        return {"id": upload_id, "name": path.name, "width": image.size[0], "height": image.size[1]}

    def _video(self, upload_id: str, folder: Path, files: list[tuple[str, bytes]]) -> dict:
        from hyperfeat.errors import DataError
        from hyperfeat.video.frames import load_frames

        names = [safe_name(n, f"frame{i:05d}") for i, (n, _) in enumerate(files)]
        empty = [n for n, (_, data) in zip(names, files) if not data]
        if empty:
            raise DataError(f"empty video: {empty[0]} has no content (0 bytes)")
        if len(files) == 1 and Path(names[0]).suffix.lower() not in FRAME_SUFFIXES:
            source = folder / names[0]  # one video file
            source.write_bytes(files[0][1])
            shown = names[0]
        else:  # frame images: one folder, read in name order
            if len(files) == 1:
                raise DataError(f"{names[0]} is a single image; give a video file or several frames")
            source = folder / "frames"
            source.mkdir()
            for name, (_, data) in zip(names, files):
                (source / name).write_bytes(data)
            shown = f"{len(files)} frames"
        video = load_frames(self.hf, source)
        self.uploads[upload_id] = {"kind": "video", "path": source, "frames": video, "name": shown}
        w, h = video.original_size
        return {"id": upload_id, "name": shown, "width": w, "height": h, "num_frames": len(video),
                "preview": work.first_frame_preview(video)}

    def _get(self, upload_id, kind: str) -> dict:
        item = self.uploads.get(str(upload_id))
        if item is None or item["kind"] != kind:
            raise BadRequest(f"upload the {kind} first (no {kind} with id {upload_id!r})")
        return item

    # ------------------------------------------------------------------ jobs
    def start_match(self, body: dict) -> dict:
        source, target = self._get(body.get("source"), "image"), self._get(body.get("target"), "image")
        method = str(body.get("method", "nn"))
        if method not in METHODS:
            raise BadRequest(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        try:
            point = [float(body["x"]), float(body["y"])]
        except (KeyError, TypeError, ValueError) as err:
            raise BadRequest(f"a match needs the clicked point x, y in source pixels; got {body!r}") from err
        point = clicked_point(point, source["size"])
        heat = bool(body.get("heat_map", True))
        job = self.jobs.submit("match", lambda job: work.match_point(
            self.hf, source["path"], target["path"], point, method, job.report, self.match_descriptors, heat))
        return {"job": job.id}

    def start_track(self, body: dict) -> dict:
        video = self._get(body.get("video"), "video")
        points = [list(p) for p in body.get("points") or []]
        if body.get("grid"):
            points += work.grid_points(video["frames"].original_size, int(body["grid"]))
        tail = int(body.get("tail_length", 10))

        def run(job):
            out = self.work_dir / "results" / job.id
            result = work.track_points(self.hf, video["frames"], points, out, job.report,
                                       tail_length=tail, name=video["name"])
            result["urls"] = {Path(f).suffix[1:]: f"/files/{job.id}/{f}" for f in result["files"]}
            return result

        return {"job": self.jobs.submit("track", run).id}

    def result_file(self, job_id: str, name: str) -> Optional[Path]:
        job = self.jobs.get(job_id)
        if job is None or job.state != "done" or job.kind != "track":
            return None
        path = self.work_dir / "results" / job_id / safe_name(name, "")
        return path if path.is_file() else None

    def mixing_png(self) -> bytes:
        if self._mixing is None:
            self._mixing = work.mixing_png(self.hf, f"mixing weights: {self.title}")
        return self._mixing

    def info(self) -> dict:
        cfg = self.hf.cfg
        return {"checkpoint": self.title, "backbone": str(cfg.backbone.model), "methods": list(METHODS),
                "load_size": int(cfg.features.load_size), "timesteps": len(self.hf.extractor.save_steps),
                "layers": len(self.hf.extractor.layers)}

    def close(self) -> None:
        self.jobs.shutdown()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def clicked_point(point: list[float], size_wh: tuple[int, int]) -> list[float]:
    """A click in source pixels, refused with a readable message when it misses the picture.

    The picture covers x in [-0.5, W - 0.5] (pixel centres at integers); a click on the outer
    half of an edge pixel is moved onto that pixel's centre, because
    :meth:`Hyperfeatures.match` takes points in [0, W - 1] × [0, H - 1].
    """
    (x, y), (w, h) = point, size_wh
    if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
        raise BadRequest(f"the click at (x, y) = ({x:.1f}, {y:.1f}) is outside the {w}×{h} source image; "
                         f"click on the picture")
    return [min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)]


def read_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A multipart/form-data body → (plain fields, [(file name, bytes), ...] of its files)."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1") + body)
    if not message.is_multipart():
        raise BadRequest("an upload must be multipart/form-data")
    fields, files = {}, []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            files.append((filename, data))
        elif name:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def make_handler(app: WebApp) -> type[BaseHTTPRequestHandler]:
    static = resources.files("hyperfeat.web") / "static"

    class Handler(BaseHTTPRequestHandler):
        server_version = "hyperfeat-web"

        def log_message(self, fmt: str, *args) -> None:  # quiet: only to the log
            log.debug("%s " + fmt, self.address_string(), *args)

        # -------------------------------------------------------------- replies
        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, payload: dict, status: int = 200) -> None:
            self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

        def _error(self, message: str, status: int = 400) -> None:
            self._json({"error": app.clean(message)}, status)

        def _guard(self, handle) -> None:
            try:
                handle()
            except HyperfeatError as err:
                self._error(str(err))
            except Exception as err:  # noqa: BLE001  (one line to the page, the traceback to the log)
                log.exception("request %s failed", self.path)
                self._error(f"internal error ({type(err).__name__}): {err}", 500)

        # -------------------------------------------------------------- GET
        def do_GET(self) -> None:  # noqa: N802
            self._guard(self._get)

        def _get(self) -> None:
            path = urlparse(self.path).path
            if path in ("/", "/index.html"):
                path = "/static/index.html"
            if path.startswith("/static/"):
                name = safe_name(path[len("/static/"):], "")
                item = static / name
                if name and item.is_file():
                    return self._send(200, item.read_bytes(), STATIC_TYPES.get(Path(name).suffix, "application/octet-stream"))
                return self._error(f"no such page: {path}", 404)
            if path == "/api/info":
                return self._json(app.info())
            if path == "/api/examples":
                return self._json({"examples": list(app.examples)})
            if path.startswith("/api/image/"):
                file = app.image_file(path[len("/api/image/"):])
                if file is None:
                    return self._error(f"no such image: {path}", 404)
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                return self._send(200, file.read_bytes(), kind)
            if path == "/api/mixing.png":
                return self._send(200, app.mixing_png(), "image/png")
            if path.startswith("/api/jobs/"):
                job = app.jobs.get(path[len("/api/jobs/"):])
                return self._json(job.as_dict()) if job else self._error("no such job", 404)
            if path.startswith("/files/"):
                parts = path.split("/")
                file = app.result_file(parts[2], parts[3]) if len(parts) == 4 else None
                if file is None:
                    return self._error(f"no such file: {path}", 404)
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                return self._send(200, file.read_bytes(), kind)
            return self._error(f"no such page: {path}", 404)

        # -------------------------------------------------------------- POST
        def do_POST(self) -> None:  # noqa: N802
            self._guard(self._post)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_UPLOAD_BYTES:
                raise BadRequest(f"upload too large: {length} bytes (at most {MAX_UPLOAD_BYTES})")
            return self.rfile.read(length)

        def _post(self) -> None:
            url = urlparse(self.path)
            body = self._body()
            if url.path == "/api/upload":
                kind = parse_qs(url.query).get("kind", [""])[0]
                fields, files = read_multipart(self.headers.get("Content-Type", ""), body)
                return self._json(app.upload(fields.get("kind", kind), files))
            try:
                payload = json.loads(body or b"{}")
            except json.JSONDecodeError as err:
                raise BadRequest(f"the request body must be JSON: {err}") from err
            if url.path == "/api/example":
                return self._json(app.use_example(payload.get("name", "")))
            if url.path == "/api/match":
                return self._json(app.start_match(payload))
            if url.path == "/api/track":
                return self._json(app.start_track(payload))
            return self._error(f"no such page: {url.path}", 404)

    return Handler


def make_server(app: WebApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for ``app`` (port 0: a free port; see ``server.server_address``)."""
    server = ThreadingHTTPServer((host, int(port)), make_handler(app))
    server.daemon_threads = True
    return server


def serve_forever(app: WebApp, host: str = "127.0.0.1", port: int = 8000) -> None:
    server = make_server(app, host, port)
    print(f"hyperfeat page at http://{server.server_address[0]}:{server.server_address[1]}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
