"""``hyperfeat serve`` as a user starts it (the command line, in a thread): it listens on a free
port, answers the page's first request with the checkpoint it loaded, and refuses a bad request
with one readable line."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

from hyperfeat.cli import build_parser, main
from hyperfeat.model.checkpoint import CheckpointMeta, build_network, save_checkpoint
from hyperfeat.model.features import FeatureExtractor


def test_serve_and_demo_are_commands():
    parser = build_parser()
    for name in ("serve", "demo"):
        args = parser.parse_args([name, "--checkpoint", "x.ckpt", "--port", "0", "--examples", "imgs"])
        assert (args.command, args.port, args.examples) == (name, 0, "imgs")


def test_serve_starts_and_answers(tmp_path, tiny_cfg, tiny_backbone, monkeypatch, capsys):
    import hyperfeat.web.server as web_server

    extractor = FeatureExtractor(tiny_backbone, tiny_cfg.features)
    network = build_network(tiny_cfg, extractor.channels)
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(
        ckpt, network, CheckpointMeta(tiny_cfg, extractor.channels, extractor.layers, list(extractor.save_steps))
    )
    servers, make = [], web_server.make_server
    monkeypatch.setattr(web_server, "make_server", lambda *a, **k: servers.append(make(*a, **k)) or servers[-1])
    codes = []
    thread = threading.Thread(
        target=lambda: codes.append(main(["serve", "--checkpoint", str(ckpt), "--port", "0", "backbone.device=cpu"])),
        daemon=True,
    )
    thread.start()
    try:
        deadline, printed = time.monotonic() + 60, ""
        while not re.search(r"http://127\.0\.0\.1:\d+/", printed) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
            printed += capsys.readouterr().out
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", printed)
        assert found, f"the server printed no address: {printed!r}"
        url = found.group(1)
        with urllib.request.urlopen(url + "/api/info", timeout=10) as response:
            info = json.load(response)
        assert info["checkpoint"] == "tiny.ckpt" and info["timesteps"] == len(extractor.save_steps)
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            assert b'id="tab-match"' in response.read()
        request = urllib.request.Request(
            url + "/api/match", json.dumps({"source": "upload-9"}).encode(), {"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a match of an unknown upload was accepted")
        except urllib.error.HTTPError as err:
            assert err.code == 400
            assert json.load(err) == {"error": "upload the image first (no image with id 'upload-9')"}
    finally:
        for server in servers:
            server.shutdown()
        thread.join(timeout=20)
    assert codes == [0]
