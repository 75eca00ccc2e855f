"""Less third-party noise on the command line: Lightning's tips and accelerator banner, the
deprecation warnings other packages raise about each other, repeated harmless notices.

Only the command-line entry and training call :func:`quiet_third_party`; importing hyperfeat as
a library leaves the caller's warning and logging settings alone. Warnings about hyperfeat's
own input (data, cache, config) are never filtered.
"""

from __future__ import annotations

import logging
import warnings

THIRD_PARTY = (
    r"(lightning|lightning_fabric|pytorch_lightning|lightning_utilities|torchmetrics|wandb|diffusers|"
    r"transformers|huggingface_hub|torch|torchvision|pydantic|omegaconf|av)(\.|$)"
)

# Lightning's INFO lines that say nothing about this run
_DROPPED_PREFIXES = (
    "💡 Tip",
    "Seed set to ",
    "GPU available: ",
    "TPU available: ",
    "HPU available: ",
    "IPU available: ",
)
_DROPPED_MESSAGES = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch ↔ Lightning pytree deprecation
    r".*`local_dir_use_symlinks` argument is deprecated.*",
    r".*The anonymous setting has no effect.*",
    r".*does not have many workers which may be a bottleneck.*",  # the data are in memory or cached
)
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch",
    "lightning.fabric",
    "lightning_utilities.core.rank_zero",
)


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DROPPED_PREFIXES)


_FILTER = DropNoise()


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY)
    for message in _DROPPED_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
