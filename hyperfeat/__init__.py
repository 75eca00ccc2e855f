"""hyperfeat: diffusion hyperfeatures for semantic and temporal correspondence.

``from hyperfeat import Hyperfeatures`` is the inference entry point; it is imported lazily so
that ``import hyperfeat`` stays light (no diffusers import until it is used).
"""

from typing import Any

from hyperfeat.version import __version__

__all__ = ["Hyperfeatures", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Hyperfeatures":
        from hyperfeat.api import Hyperfeatures

        return Hyperfeatures
    raise AttributeError(f"module 'hyperfeat' has no attribute {name!r}")
