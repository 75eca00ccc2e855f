"""Error types. Every message names the file, field or value at fault and what was expected."""


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
    """A file that cannot be written: no space left on the device (or quota reached)."""


class NumericsError(HyperfeatError):
    """NaN or inf in cached maps, a loss or weights: training stops before writing them."""


class TrainingInterrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving ``last.ckpt``; ``exit_code`` is 128 + the
    signal number, as a shell reports a process killed by it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
