"""The Hugging Face hub, seen from hyperfeat: is it reachable, are we offline, and what to tell
the user when a file cannot be had.

A download that cannot reach the hub otherwise retries and then reports a misleading "does not
appear to have a file named config.json". Here the hub is probed once per process (one HEAD
request, a few seconds at most); when it does not answer, only the local cache is used and a
miss says so, naming the download command of the installed ``huggingface_hub``.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Optional

PROBE_TIMEOUT_S = 3.0
_PROBED: dict[str, Optional[str]] = {}  # endpoint → None (reachable) or why not


def endpoint() -> str:
    """The hub address huggingface_hub uses (``HF_ENDPOINT`` or its default)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read at call time, not only at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def unreachable_reason(timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when the hub answers; else a short reason. Probed once per endpoint and process."""
    url = endpoint()
    if url not in _PROBED:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
            _PROBED[url] = None
        except urllib.error.HTTPError:  # an HTTP answer, even an error, means it is there
            _PROBED[url] = None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            _PROBED[url] = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    return _PROBED[url]


def forget_probe() -> None:
    """Probe again next time (e.g. after the network came back)."""
    _PROBED.clear()


def download_command(repo_id: str, filename: Optional[str] = None) -> str:
    """The shell command that fetches ``repo_id`` (or one file of it) into the cache with the
    installed huggingface_hub: ``hf download`` (0.34 and later) or ``huggingface-cli download``."""
    import huggingface_hub

    try:
        major, minor = (int(part) for part in huggingface_hub.__version__.split(".")[:2])
    except ValueError:
        major, minor = 1, 0
    tool = "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"
    return f"{tool} {repo_id}" + (f" {filename}" if filename else "")


def offline_advice(repo_id: str, filename: Optional[str] = None) -> str:
    """How to get a file without network here: download it where there is network, then point
    hyperfeat at the cache or a folder."""
    advice = (
        f"on a machine with network run `{download_command(repo_id, filename)}` and copy its Hugging Face "
        "cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub) here, or pass a local folder instead"
    )
    return advice if offline_mode() else advice + "; set HF_HUB_OFFLINE=1 to skip the network check"


def should_use_cache_only(local_files_only: bool = False) -> tuple[bool, Optional[str]]:
    """(cache only?, why): offline by setting, by request, or because the hub does not answer."""
    if local_files_only:
        return True, "local files only was asked for"
    if offline_mode():
        return True, "HF_HUB_OFFLINE is set"
    reason = unreachable_reason()
    if reason is not None:
        return True, f"the Hugging Face hub ({endpoint()}) cannot be reached ({reason})"
    return False, None
