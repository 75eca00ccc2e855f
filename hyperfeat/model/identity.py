"""What a descriptor or a raw map *is*: the identities that caches and checkpoints key on.

:func:`feature_identity` lists every config value that decides an image's raw decoder maps;
:func:`network_digest` hashes an aggregation network's weights; :func:`image_digest` hashes a
preprocessed image. The feature cache (:mod:`hyperfeat.train.cache`) and the video descriptor
store (:mod:`hyperfeat.video.store`) build their keys from these, so a changed config or network
never reads stale values.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hyperfeat.config import feature_config_dict
from hyperfeat.model.backbone import PRESET_MODELS, resolve_device, resolve_dtype
from hyperfeat.model.classical import CLASSICAL, classical_identity

RUNTIME_FEATURE_KEYS = ("streaming", "batch_size")  # do not change the raw maps


def digest(text: str, size: int = 20) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def image_digest(image: torch.Tensor) -> str:
    """Hash of a preprocessed (3, L, L) image: its shape and float32 bytes."""
    array = image.detach().to("cpu", torch.float32).contiguous().numpy()
    h = hashlib.blake2b(digest_size=20)
    h.update(str(tuple(array.shape)).encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def _features_identity(features: Any) -> dict:
    features = OmegaConf.to_container(features, resolve=True) if OmegaConf.is_config(features) else dict(features)
    ident = {k: v for k, v in features.items() if k not in RUNTIME_FEATURE_KEYS}
    if ident.get("ensemble_size", 1) == 1:  # one draw is what every earlier key meant: keys stay as they were
        ident.pop("ensemble_size", None)
    return ident


def feature_identity(cfg: DictConfig) -> dict:
    """Every value that decides an image's raw maps (backbone, plan, labels, layers, resolutions,
    latent, seed, compute dtype): what the feature cache and the descriptor store key on."""
    ident = feature_config_dict(cfg)
    b = cfg.backbone
    device = resolve_device(str(b.device))
    if str(b.model) == CLASSICAL:  # the filter bank's settings decide its maps (other keys stay as they were)
        ident["backbone"]["classical"] = classical_identity(b.get("classical"))
    return {
        "backbone": {
            **ident["backbone"],
            "model_id": PRESET_MODELS.get(str(b.model), str(b.model)),
            "revision": None if b.revision is None else str(b.revision),
            "variant": None if b.variant is None else str(b.variant),
            "compute_dtype": str(resolve_dtype(str(b.dtype), device)),
        },
        "features": _features_identity(cfg.features),
    }


def network_digest(network: torch.nn.Module) -> str:
    """sha256 of a network's state dict (names, shapes, dtypes and values)."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{tuple(value.shape)}|{value.dtype}|".encode())
        hasher.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return hasher.hexdigest()
