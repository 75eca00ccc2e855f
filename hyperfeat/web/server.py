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

Only its user drives the page: a request must name the served host (``127.0.0.1:PORT``,
``localhost:PORT``, ``[::1]:PORT``; else 421, so a rebound DNS name reads nothing) and come from
the page itself (an ``Origin`` other than the served one is refused with 403; a POST from
another site, told by ``Sec-Fetch-Site``, too). Every request's memory is bounded: a body needs
a valid ``Content-Length`` (411 without, 400 when negative or not a number, 413 above
``web.max_upload_mb``), an upload is streamed to disk in chunks and split there, a video is
cut at ``web.max_frames`` frames, and only the last ``web.keep_uploads`` uploads (of them
``web.keep_videos`` videos) and ``web.keep_jobs`` finished jobs are kept. The upload folder is removed on every exit
(``close``, ``atexit``, SIGTERM).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import mimetypes
import mmap
import os
import re
import shutil
import tempfile
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Optional, Union
from urllib.parse import parse_qs, urlparse

from hyperfeat.errors import HyperfeatError, ImageError, sigterm_as_interrupt
from hyperfeat.io import FRAME_SUFFIXES, write_error
from hyperfeat.web import work
from hyperfeat.web.jobs import JobRunner

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # defaults of the web block of the config (used without one)
MAX_FRAMES = 100
KEEP_UPLOADS = 6
KEEP_VIDEOS = 2
KEEP_JOBS = 8
MAX_JSON_BYTES = 1024 * 1024  # a JSON request (a click, a list of points) is small
CHUNK = 1024 * 1024  # bytes read or copied at a time
MAX_PARTS = 2000
MAX_EXAMPLES = 500
METHODS = ("nn", "mutual_nn", "soft_argmax")
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


class BadRequest(HyperfeatError):
    """A request the page should not have sent (missing field, unknown id); ``status`` is the
    HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def safe_name(name: str, fallback: str) -> str:
    """A file name without folders or odd characters (the uploaded name, for messages)."""
    stem = Path(str(name or "")).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return stem or fallback


class WebApp:
    """State of one served page: the loaded model, the uploads and the jobs."""

    def __init__(self, hf, title: str = "hyperfeat", work_dir: Optional[Path] = None, examples: Optional[Path] = None):
        self.hf = hf
        self.title = title
        self.examples = self._list_examples(examples) if examples else {}
        web = _web_settings(getattr(hf, "cfg", None))
        self.max_upload_bytes = int(web["max_upload_mb"] * 2**20)
        self.max_frames = int(web["max_frames"])
        self.keep_uploads = int(web["keep_uploads"])
        self.keep_videos = int(web["keep_videos"])
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="hyperfeat-web-"))
        self.uploads: dict[str, dict] = {}
        self._count = 0
        self._lock = threading.Lock()
        self.jobs = JobRunner(clean=self.clean, keep=int(web["keep_jobs"]), forget=self._forget_job)
        self.match_descriptors: dict = {}
        self._mixing: Optional[bytes] = None
        self._closed = False
        atexit.register(self.close)  # the users' files go with the process, however it ends short of SIGKILL

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
        upload_id, folder = self._new_upload_dir()
        self._remember(upload_id, {"kind": "image", "path": path, "size": image.size, "folder": folder})
        return {"id": upload_id, "name": str(name), "width": image.size[0], "height": image.size[1]}

    def _remember(self, upload_id: str, item: dict) -> None:
        """Keep an upload; the oldest beyond ``keep_uploads`` (of videos, whose frames are held in
        memory, beyond ``keep_videos``) are dropped with their files (a job already running on one
        keeps what it loaded)."""
        with self._lock:
            self.uploads[upload_id] = item
            videos = [key for key, kept in self.uploads.items() if kept["kind"] == "video"]
            dropped = videos[: max(0, len(videos) - self.keep_videos)]
            dropped += [key for key in self.uploads if key not in dropped][
                : max(0, len(self.uploads) - len(dropped) - self.keep_uploads)
            ]
            for key in dropped:
                shutil.rmtree(self.uploads.pop(key)["folder"], ignore_errors=True)

    def _forget_job(self, job) -> None:
        shutil.rmtree(self.work_dir / "results" / job.id, ignore_errors=True)

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

    def upload(self, kind: str, files: list[tuple[str, Union[bytes, Path]]]) -> dict:
        """Keep an uploaded image or video; ``files`` are (uploaded name, its bytes or a file
        holding them, which is moved into the upload's folder)."""
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

    @staticmethod
    def _size(data: Union[bytes, Path]) -> int:
        return data.stat().st_size if isinstance(data, Path) else len(data)

    @staticmethod
    def _place(data: Union[bytes, Path], target: Path) -> None:
        if isinstance(data, Path):
            os.replace(data, target)
        else:
            target.write_bytes(data)

    def _image(self, upload_id: str, folder: Path, files: list[tuple[str, Union[bytes, Path]]]) -> dict:
        from hyperfeat.images import load_image

        if len(files) != 1:
            raise BadRequest(f"give one image; got {len(files)} files")
        name, data = files[0]
        path = folder / safe_name(name, "image")
        if not self._size(data):
            raise ImageError(f"{path.name} is empty (0 bytes); expected an image (PNG, JPEG, ...)")
        self._place(data, path)
        try:
            image = load_image(path)
        except ImageError as err:
            raise ImageError(
                f"{path.name} is not an image the page can read; upload a PNG, JPEG or other image file"
            ) from err
        self._remember(upload_id, {"kind": "image", "path": path, "size": image.size, "folder": folder})
        return {"id": upload_id, "name": path.name, "width": image.size[0], "height": image.size[1]}

    def _video(self, upload_id: str, folder: Path, files: list[tuple[str, Union[bytes, Path]]]) -> dict:
        from hyperfeat.errors import DataError
        from hyperfeat.video.frames import load_frames

        names = [safe_name(n, f"frame{i:05d}") for i, (n, _) in enumerate(files)]
        empty = [n for n, (_, data) in zip(names, files) if not self._size(data)]
        if empty:
            raise DataError(f"empty video: {empty[0]} has no content (0 bytes)")
        if len(files) > self.max_frames:
            raise BadRequest(
                f"{len(files)} frames is more than the page takes (web.max_frames = {self.max_frames}); "
                f"upload a shorter clip",
                413,
            )
        if len(files) == 1 and Path(names[0]).suffix.lower() not in FRAME_SUFFIXES:
            source = folder / names[0]  # one video file
            self._place(files[0][1], source)
            shown = names[0]
        else:  # frame images: one folder, read in name order
            if len(files) == 1:
                raise DataError(f"{names[0]} is a single image; give a video file or several frames")
            source = folder / "frames"
            source.mkdir()
            for name, (_, data) in zip(names, files):
                self._place(data, source / name)
            shown = f"{len(files)} frames"
        video = load_frames(self.hf, source, max_frames=self.max_frames + 1)  # one more tells a longer clip
        if len(video) > self.max_frames:
            raise BadRequest(
                f"{shown} has more than {self.max_frames} frames, the most the page takes "
                f"(web.max_frames); upload a shorter clip",
                413,
            )
        self._remember(upload_id, {"kind": "video", "path": source, "frames": video, "name": shown, "folder": folder})
        w, h = video.original_size
        return {
            "id": upload_id,
            "name": shown,
            "width": w,
            "height": h,
            "num_frames": len(video),
            "preview": work.first_frame_preview(video),
        }

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
        job = self.jobs.submit(
            "match",
            lambda job: work.match_point(
                self.hf, source["path"], target["path"], point, method, job.report, self.match_descriptors, heat
            ),
        )
        return {"job": job.id}

    def start_track(self, body: dict) -> dict:
        video = self._get(body.get("video"), "video")
        points = body.get("points") or []
        if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(_finite_number(v) for v in p) for p in points
        ):
            raise BadRequest(f"points must be a list of [x, y] pairs of finite numbers; got {str(points)[:80]}")
        points = [[float(x), float(y)] for x, y in points]
        grid, tail = body.get("grid"), body.get("tail_length", 10)
        for key, value, low, high in (("grid", grid, 0, 32), ("tail_length", tail, 0, 10_000)):
            if value is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
            ):
                raise BadRequest(f"{key} must be an integer in [{low}, {high}]; got {value!r}")
        if grid:
            points += work.page_grid_points(video["frames"].original_size, int(grid))
        tail = int(tail)

        def run(job):
            out = self.work_dir / "results" / job.id
            result = work.track_points(
                self.hf, video["frames"], points, out, job.report, tail_length=tail, name=video["name"]
            )
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
        return {
            "checkpoint": self.title,
            "backbone": str(cfg.backbone.model),
            "methods": list(METHODS),
            "load_size": int(cfg.features.load_size),
            "timesteps": len(self.hf.extractor.save_steps),
            "layers": len(self.hf.extractor.layers),
        }

    def close(self) -> None:
        """Stop the jobs and remove the users' files (the whole work folder when the app made it,
        else the uploads and results in it). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.jobs.shutdown()
        with self._lock:
            self.uploads.clear()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        else:
            for item in (
                list(self.work_dir.glob("upload-*"))
                + list(self.work_dir.glob(".incoming-*"))
                + [self.work_dir / "results"]
            ):
                shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
        atexit.unregister(self.close)


def _web_settings(cfg) -> dict:
    """The ``web`` block of the config (its defaults where a config has none)."""
    defaults = {
        "max_upload_mb": MAX_UPLOAD_BYTES / 2**20,
        "max_frames": MAX_FRAMES,
        "keep_uploads": KEEP_UPLOADS,
        "keep_videos": KEEP_VIDEOS,
        "keep_jobs": KEEP_JOBS,
    }
    block = cfg.get("web") if cfg is not None and hasattr(cfg, "get") else None
    return {**defaults, **({k: block[k] for k in defaults if k in block} if block is not None else {})}


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def clicked_point(point: list[float], size_wh: tuple[int, int]) -> list[float]:
    """A click in source pixels, refused with a readable message when it misses the picture.

    The picture covers x in [-0.5, W - 0.5] (pixel centres at integers); a click on the outer
    half of an edge pixel is moved onto that pixel's centre, because
    :meth:`Hyperfeatures.match` takes points in [0, W - 1] × [0, H - 1].
    """
    (x, y), (w, h) = point, size_wh
    if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
        raise BadRequest(
            f"the click at (x, y) = ({x:.1f}, {y:.1f}) is outside the {w}×{h} source image; click on the picture"
        )
    return [min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)]


def multipart_parts(content_type: str, data) -> list[tuple[Optional[str], Optional[str], int, int]]:
    """(field name, file name or None, start, end) of every part of a multipart/form-data body
    held in ``data`` (bytes or a memory map of the file it was streamed to): only the small part
    headers are copied, never the files. A malformed body is a :class:`BadRequest`."""
    from email.message import Message

    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise BadRequest("an upload must be multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    pos = data.find(delimiter)
    if pos < 0:
        raise BadRequest("malformed upload: the multipart boundary never occurs in the body")
    parts = []
    while True:
        pos += len(delimiter)
        if data[pos : pos + 2] == b"--":  # the closing delimiter
            return parts
        if data[pos : pos + 2] != b"\r\n" or len(parts) >= MAX_PARTS:
            raise BadRequest(
                "malformed upload: a multipart delimiter is not followed by a line break"
                if len(parts) < MAX_PARTS
                else f"an upload holds at most {MAX_PARTS} parts"
            )
        head_end = data.find(b"\r\n\r\n", pos + 2, pos + 2 + 16384)
        if head_end < 0:
            raise BadRequest("malformed upload: a part's headers do not end (or exceed 16 KiB)")
        part = BytesParser(policy=HTTP).parsebytes(bytes(data[pos + 2 : head_end + 4]))
        end = data.find(b"\r\n" + delimiter, head_end + 4)
        if end < 0:
            raise BadRequest("malformed upload: the body ends before the last part is closed")
        parts.append((part.get_param("name", header="content-disposition"), part.get_filename(), head_end + 4, end))
        pos = end + 2


def read_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A multipart/form-data body in memory → (plain fields, [(file name, bytes), ...] of its files)."""
    fields, files = {}, []
    for name, filename, start, end in multipart_parts(content_type, body):
        if filename is not None:
            files.append((filename, body[start:end]))
        elif name:
            fields[name] = body[start:end].decode("utf-8", "replace")
    return fields, files


def split_multipart_file(content_type: str, body: Path, folder: Path) -> tuple[dict[str, str], list[tuple[str, Path]]]:
    """A multipart/form-data body streamed to the file ``body`` → (plain fields, [(file name, a
    file in ``folder`` holding its bytes), ...]), copied a chunk at a time (memory stays small
    whatever the upload's size)."""
    fields, files = {}, []
    with open(body, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for i, (name, filename, start, end) in enumerate(multipart_parts(content_type, data)):
            if filename is None:
                if name and end - start <= 65536:
                    fields[name] = data[start:end].decode("utf-8", "replace")
                continue
            target = folder / f"part-{i:05d}"
            with open(target, "wb") as out:
                for at in range(start, end, CHUNK):
                    out.write(data[at : min(at + CHUNK, end)])
            files.append((filename, target))
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
            if self.command == "POST":
                self.close_connection = True  # its body may be left unread: never parse it as a request
            self._json({"error": app.clean(message)}, status)

        def _guard(self, handle, changes_state: bool = False) -> None:
            try:
                self._check_sender(changes_state)
                handle()
            except BadRequest as err:
                self._error(str(err), err.status)
            except HyperfeatError as err:
                self._error(str(err))
            except OSError as err:  # the machine's fault (a full disk): one line, 507 or 500
                mapped = write_error(err, free=False)
                self._error(
                    str(mapped) if mapped else f"cannot complete the request: {err.strerror or err}",
                    507 if mapped else 500,
                )
            except Exception as err:  # noqa: BLE001  (one line to the page, the traceback to the log)
                log.exception("request %s failed", self.path)
                self._error(f"internal error ({type(err).__name__}): {err}", 500)

        def _check_sender(self, changes_state: bool) -> None:
            """Only the served host names (a DNS-rebound name is refused: 421) and only the page
            itself as origin (403), so another site can neither read uploads nor post them."""
            host = self.headers.get("Host")
            if host is None:
                raise BadRequest("the request names no Host", 400)
            allowed = getattr(self.server, "allowed_hosts", None)
            if allowed is not None and host.lower() not in allowed:
                raise BadRequest(f"this page answers only to {', '.join(sorted(allowed))}; got Host {host[:80]!r}", 421)
            origin = self.headers.get("Origin")
            if origin is not None and origin != f"http://{host}":
                raise BadRequest(f"cross-origin request from {origin[:80]!r} refused", 403)
            site = self.headers.get("Sec-Fetch-Site")
            if changes_state and origin is None and site not in (None, "same-origin", "none"):
                raise BadRequest(f"cross-site request ({site}) refused", 403)

        # -------------------------------------------------------------- GET
        def do_GET(self) -> None:  # noqa: N802
            self._guard(self._get)

        def _get(self) -> None:
            path = urlparse(self.path).path
            if path in ("/", "/index.html"):
                path = "/static/index.html"
            if path.startswith("/static/"):
                name = safe_name(path[len("/static/") :], "")
                item = static / name
                if name and item.is_file():
                    return self._send(
                        200, item.read_bytes(), STATIC_TYPES.get(Path(name).suffix, "application/octet-stream")
                    )
                return self._error(f"no such page: {path}", 404)
            if path == "/api/info":
                return self._json(app.info())
            if path == "/api/examples":
                return self._json({"examples": list(app.examples)})
            if path.startswith("/api/image/"):
                file = app.image_file(path[len("/api/image/") :])
                if file is None:
                    return self._error(f"no such image: {path}", 404)
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                return self._send(200, file.read_bytes(), kind)
            if path == "/api/mixing.png":
                return self._send(200, app.mixing_png(), "image/png")
            if path.startswith("/api/jobs/"):
                job = app.jobs.get(path[len("/api/jobs/") :])
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
            self._guard(self._post, changes_state=True)

        def _length(self, limit: int) -> int:
            """The body's length from its one valid Content-Length, at most ``limit`` bytes."""
            if self.headers.get("Transfer-Encoding"):
                raise BadRequest("chunked requests are not accepted; send a Content-Length", 411)
            values = self.headers.get_all("Content-Length") or []
            if not values:
                raise BadRequest("a request with a body needs a Content-Length header", 411)
            if len(set(v.strip() for v in values)) != 1 or not values[0].strip().isdigit():
                raise BadRequest(
                    f"Content-Length must be one non-negative integer; got {', '.join(values)[:80]!r}", 400
                )
            length = int(values[0])
            if length > limit:
                raise BadRequest(f"request too large: {length} bytes (at most {limit})", 413)
            return length

        def _read(self, length: int, out=None) -> bytes:
            """``length`` bytes of the body, into memory or (``out``) a file, a chunk at a time."""
            got, chunks = 0, []
            while got < length:
                chunk = self.rfile.read(min(CHUNK, length - got))
                if not chunk:
                    raise BadRequest(f"the request body ended after {got} of {length} bytes", 400)
                got += len(chunk)
                out.write(chunk) if out is not None else chunks.append(chunk)
            return b"".join(chunks)

        def _upload(self, url) -> dict:
            length = self._length(app.max_upload_bytes)
            if not length:
                raise BadRequest("the upload is empty", 400)
            app.work_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=app.work_dir, prefix=".incoming-")
            body = Path(name)
            parts = Path(tempfile.mkdtemp(dir=app.work_dir, prefix=".incoming-parts-"))
            try:
                with os.fdopen(fd, "wb") as out:
                    self._read(length, out)
                fields, files = split_multipart_file(self.headers.get("Content-Type", ""), body, parts)
                body.unlink()
                kind = fields.get("kind", parse_qs(url.query).get("kind", [""])[0])
                return app.upload(kind, files)
            finally:
                body.unlink(missing_ok=True)
                shutil.rmtree(parts, ignore_errors=True)

        def _post(self) -> None:
            url = urlparse(self.path)
            if url.path == "/api/upload":
                return self._json(self._upload(url))
            body = self._read(self._length(MAX_JSON_BYTES))
            try:
                payload = json.loads(body or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise BadRequest(f"the request body must be JSON: {err}") from err
            if not isinstance(payload, dict):
                raise BadRequest(f"the request body must be a JSON object; got {type(payload).__name__}")
            if url.path == "/api/example":
                return self._json(app.use_example(payload.get("name", "")))
            if url.path == "/api/match":
                return self._json(app.start_match(payload))
            if url.path == "/api/track":
                return self._json(app.start_track(payload))
            return self._error(f"no such page: {url.path}", 404)

    return Handler


def served_hosts(host: str, port: int) -> Optional[set[str]]:
    """The Host header values the page answers to: this machine's names with the port, and the
    bound address itself. None for a wildcard address (0.0.0.0, ::), which its user opened to
    the network on purpose: any name then, the origin check still applies."""
    if host in ("", "0.0.0.0", "::"):
        return None
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    return {f"{name.lower()}:{port}" for name in names} | ({n.lower() for n in names} if port == 80 else set())


def make_server(app: WebApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for ``app`` (port 0: a free port; see ``server.server_address``)."""
    server = ThreadingHTTPServer((host, int(port)), make_handler(app))
    server.daemon_threads = True
    server.allowed_hosts = served_hosts(host, server.server_address[1])
    return server


def serve_forever(app: WebApp, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C or SIGTERM; the uploads are removed either way."""
    server = make_server(app, host, port)
    with sigterm_as_interrupt():
        try:
            print(
                f"hyperfeat page at http://{server.server_address[0]}:{server.server_address[1]}/ (Ctrl-C stops it)",
                flush=True,
            )
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            app.close()
