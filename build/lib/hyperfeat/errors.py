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
