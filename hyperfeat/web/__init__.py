"""A small local web page over the public API: match a clicked point, track points in a clip,
look at the checkpoint's mixing weights.

Only the standard library serves it (:mod:`http.server`); the page is plain HTML and
JavaScript shipped as package data. All the work goes through :class:`hyperfeat.api.Hyperfeatures`
(``match_mutual``, ``describe``, ``describe_video``, ``track``), the same calls the commands
make. Start it with ``hyperfeat serve --checkpoint CKPT``.
"""

from hyperfeat.web.server import WebApp, make_server, serve_forever

__all__ = ["WebApp", "make_server", "serve_forever"]
