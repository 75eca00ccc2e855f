"""The frozen diffusion parts: UNet, VAE, text encoder and tokenizer.

Loaded with diffusers/transformers ``from_pretrained`` from a hub id or a local folder in the
Stable Diffusion layout (``unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json``),
or built small and random (``model: tiny``) for tests and offline runs. The pipeline's own
scheduler is never used: the timestep plan builds its DDIM numbers itself (see schedule.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from hyperfeat.errors import BackboneError

TINY = "tiny"
PRESET_MODELS = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1-base",
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
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _freeze(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if next(module.parameters()).dtype != dtype:
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
    else:
        model = PRESET_MODELS.get(model, model)
        unet, vae, text_encoder, tokenizer = load_pretrained_components(
            model,
            dtype=dtype,
            local_files_only=bool(b.local_files_only),
            revision=b.revision,
            variant=b.variant,
        )
    return assemble_backbone(unet, vae, text_encoder, tokenizer, model, device, dtype,
                             attention=str(b.attention), compile=bool(b.compile))


def assemble_backbone(unet, vae, text_encoder, tokenizer, model_id: str, device: torch.device, dtype: torch.dtype,
                      attention: str = "sdpa", compile: bool = False) -> Backbone:
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
        raise BackboneError(
            f"model folder not found: {model} (and it is not a hub id of the form owner/name)"
        )
    else:
        source = model
    kwargs = dict(torch_dtype=dtype, local_files_only=local_files_only, revision=revision)
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", variant=variant, **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", variant=variant, **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", variant=variant, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_files_only, revision=revision)
    except (OSError, ValueError) as err:
        raise BackboneError(
            f"cannot load the diffusion model {model!r}: {err}\n"
            "How to get it: (1) with network access, give a hub id such as "
            f"backbone.model={PRESET_MODELS['sd15']} (downloaded once into the Hugging Face cache); "
            "(2) offline, download it elsewhere (e.g. `huggingface-cli download "
            f"{PRESET_MODELS['sd15']}`) and pass the folder: backbone.model=/path/to/folder; "
            "(3) with a filled cache and no network, set backbone.local_files_only=true or HF_HUB_OFFLINE=1; "
            "(4) for a quick offline run without weights, use backbone=tiny."
        ) from err
    return unet, vae, text_encoder, tokenizer


# ----------------------------------------------------------------------------- tiny model

TINY_TEXT_DIM = 32


def _byte_level_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _tiny_tokenizer(folder: Path):
    """A byte-level CLIP tokenizer with no merges (one token per character), written offline."""
    from transformers import CLIPTokenizer

    chars = _byte_level_alphabet()
    vocab = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tokenizer


def build_tiny_components(seed: int = 0):
    """A small random UNet/VAE/text encoder with the SD 1.5 block structure.

    Four decoder blocks of three ResNets each (so 12 hooked layers, as in SD), cross-attention
    in the same places, a VAE with the same factor 8 and 4 latent channels.
    """
    import tempfile

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64, 64, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_TEXT_DIM,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=128,
            scaling_factor=0.18215,
        )
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = _tiny_tokenizer(Path(tmp))
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TINY_TEXT_DIM,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    finally:
        torch.random.set_rng_state(generator_state)
    return unet, vae, text_encoder, tokenizer


def save_tiny_pipeline(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random model in the Stable Diffusion folder layout (as save_pretrained does)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    unet, vae, text_encoder, tokenizer = build_tiny_components(seed)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
