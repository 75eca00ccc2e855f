"""Error types. Every message names the file, field or value at fault and what was expected.
Also how an interruption surfaces: :func:`sigterm_as_interrupt` (SIGTERM read as Ctrl-C)."""

import contextlib
import signal
import threading
from typing import Iterator


class HyperfeatError(ValueError):
    """Base class of every error hyperfeat raises on bad input."""


class ConfigError(HyperfeatError):
    """An unknown config key, a bad value, or a bad preset name."""


class ImageError(HyperfeatError):
    """A missing, unreadable or corrupt image."""


class DataError(HyperfeatError):
    """A data set file or annotation that is missing or malformed."""


class CheckpointError(HyperfeatError):
    """A checkpoint that is missing, corrupt, or made for another backbone or layer set."""


class BackboneError(HyperfeatError):
    """A diffusion model that cannot be found or loaded."""


class StorageError(HyperfeatError):
    """A file that cannot be written: no space left on the device (or quota reached), a read-only
    file system, permission denied, a file where a folder is needed (see :func:`hyperfeat.io.write_error`)."""


class NumericsError(HyperfeatError):
    """NaN or inf in cached maps, a loss or weights: training stops before writing them."""


class TrainingInterrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving ``last.ckpt``; ``exit_code`` is 128 + the
    signal number, as a shell reports a process killed by it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, for the duration of the block (main thread
    only): every command then keeps what Ctrl-C keeps (eval's partial record, training's last.ckpt,
    the page's cleaned-up uploads). Yields a list that holds the signal once one came."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
