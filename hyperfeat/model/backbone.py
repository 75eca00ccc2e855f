"""The frozen diffusion parts: UNet, VAE, text encoder and tokenizer.

Loaded with diffusers/transformers ``from_pretrained`` from a hub id or a local folder in the
Stable Diffusion layout (``unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json``),
or built small and random (``model: tiny``) for tests and offline runs. The pipeline's own
scheduler is never used: the timestep plan builds its DDIM numbers itself (see schedule.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from hyperfeat.errors import BackboneError
from hyperfeat.model.classical import CLASSICAL, ClassicalSettings, build_classical_components
from hyperfeat.model.tiny import build_tiny_components

TINY = "tiny"


PRESET_MODELS = {  # short names of backbone.model, each the backbone preset of the same name
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21base": "stabilityai/stable-diffusion-2-1-base",  # 512 px, ε-prediction (dhf-sd21's)
    "sd21": "stabilityai/stable-diffusion-2-1",  # 768 px, v-prediction (DIFT's)
}


SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")


@dataclass
class Backbone:
    """The frozen parts, on one device, in eval mode with gradients off."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    model_id: str
    device: torch.device
    dtype: torch.dtype

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, batch_size: int = 1) -> torch.Tensor:
        """Text condition: the encoder's last_hidden_state for ``prompt`` padded to max length.

        Returns (batch_size, 77, E) in the backbone dtype.
        """
        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(self.device)  # (1, 77)
        hidden = self.text_encoder(ids).last_hidden_state  # (1, 77, E)
        return hidden.expand(batch_size, *hidden.shape[1:]).to(self.dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BackboneError(f"backbone.device={name!r} is not a device (cpu, cuda, cuda:1, mps, auto): {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(cuda_missing_message(f"backbone.device={name}"))
    return device


def cuda_missing_message(what: str) -> str:
    """One line saying why CUDA cannot be used here and what to do."""
    if torch.version.cuda is None:
        return (
            f"{what} but this PyTorch ({torch.__version__}) is a CPU-only build: install the CUDA build, e.g. "
            "`pip install torch --index-url https://download.pytorch.org/whl/cu126` (pick your CUDA version "
            "on pytorch.org), or use device=cpu"
        )
    return (
        f"{what} but no CUDA device is visible to PyTorch {torch.__version__} (CUDA {torch.version.cuda}): "
        "check the driver with `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use device=cpu"
    )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _freeze(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    first = next(module.parameters(), None)  # the classical parts have none
    if first is not None and first.dtype != dtype:
        module.to(dtype=dtype)
    module.to(device=device)
    module.eval()
    module.requires_grad_(False)
    return module


def load_backbone(cfg: DictConfig) -> Backbone:
    """Load (or build, for ``tiny``) the frozen backbone named by ``cfg.backbone``."""
    b = cfg.backbone
    device = resolve_device(str(b.device))
    dtype = resolve_dtype(str(b.dtype), device)
    model = str(b.model)
    if model == TINY:
        unet, vae, text_encoder, tokenizer = build_tiny_components(seed=int(b.tiny_seed))
    elif model == CLASSICAL:  # no weights, no attention: the filter bank's parts, frozen as the UNet's
        parts = build_classical_components(ClassicalSettings.from_config(b.get("classical")))
        return Backbone(
            *(_freeze(p, device, dtype) for p in parts[:3]),
            tokenizer=parts[3],
            model_id=model,
            device=device,
            dtype=dtype,
        )
    else:
        model = PRESET_MODELS.get(model, model)
        unet, vae, text_encoder, tokenizer = load_pretrained_components(
            model,
            dtype=dtype,
            local_files_only=bool(b.local_files_only),
            revision=b.revision,
            variant=b.variant,
        )
    return assemble_backbone(
        unet, vae, text_encoder, tokenizer, model, device, dtype, attention=str(b.attention), compile=bool(b.compile)
    )


def assemble_backbone(
    unet,
    vae,
    text_encoder,
    tokenizer,
    model_id: str,
    device: torch.device,
    dtype: torch.dtype,
    attention: str = "sdpa",
    compile: bool = False,
) -> Backbone:
    """Frozen :class:`Backbone` from its parts: the attention processor, dtype and device set,
    eval mode, no gradients; the UNet compiled when asked."""
    if attention == "default":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    else:
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    backbone = Backbone(
        unet=_freeze(unet, device, dtype),
        vae=_freeze(vae, device, dtype),
        text_encoder=_freeze(text_encoder, device, dtype),
        tokenizer=tokenizer,
        model_id=model_id,
        device=device,
        dtype=dtype,
    )
    if compile:
        backbone.unet = torch.compile(backbone.unet)
    return backbone


def load_pretrained_components(
    model: str,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool = False,
    revision: Optional[str] = None,
    variant: Optional[str] = None,
):
    """UNet, VAE, text encoder and tokenizer from a hub id or a local SD-layout folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(model).expanduser()
    if path.exists():
        missing = [sub for sub in SD_SUBFOLDERS if not (path / sub).is_dir()]
        if missing:
            raise BackboneError(
                f"model folder {path} is not in the Stable Diffusion layout: missing "
                f"{', '.join(f'{m}/' for m in missing)} (expected unet/ vae/ text_encoder/ tokenizer/ "
                "scheduler/ model_index.json, as written by diffusers' save_pretrained)"
            )
        source = str(path)
    elif model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise BackboneError(f"model folder not found: {model} (and it is not a hub id of the form owner/name)")
    else:
        source = model
    why = None
    local = path.exists()
    if not local:  # a hub id: probe the hub once instead of retrying against a dead network
        from hyperfeat import hub

        cache_only, why = hub.should_use_cache_only(local_files_only)
        local_files_only = local_files_only or cache_only
    kwargs = dict(torch_dtype=dtype, local_files_only=local_files_only, revision=revision)
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", variant=variant, **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", variant=variant, **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", variant=variant, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(
            source, subfolder="tokenizer", local_files_only=local_files_only, revision=revision
        )
    except (OSError, ValueError) as err:
        if local:  # nothing to download: the folder itself is damaged or incomplete
            raise BackboneError(
                f"cannot load the diffusion model from the folder {path}: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__} (a damaged or "
                "incomplete copy? write it again with diffusers' save_pretrained)"
            ) from err
        if why is not None:
            from hyperfeat import hub

            raise BackboneError(
                f"cannot load the diffusion model {model!r}: it is not (completely) in the Hugging "
                f"Face cache and {why}; {hub.offline_advice(model)}; or use backbone=tiny for a "
                "quick run without weights"
            ) from err
        from hyperfeat.hub import download_command

        raise BackboneError(
            f"cannot load the diffusion model {model!r}: {err}\n"
            "How to get it: (1) with network access, give a hub id such as "
            f"backbone.model={PRESET_MODELS['sd15']} (downloaded once into the Hugging Face cache); "
            f"(2) offline, download it elsewhere (e.g. `{download_command(PRESET_MODELS['sd15'])}`) and "
            "pass the folder: backbone.model=/path/to/folder; "
            "(3) with a filled cache and no network, set backbone.local_files_only=true or HF_HUB_OFFLINE=1; "
            "(4) for a quick offline run without weights, use backbone=tiny."
        ) from err
    return unet, vae, text_encoder, tokenizer
