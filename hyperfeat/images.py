"""Image loading and the reference preprocessing (PIL bilinear resize, [-1, 1])."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hyperfeat.errors import ImageError

ImageLike = Union[str, Path, Image.Image, torch.Tensor, np.ndarray]


def load_image(source: ImageLike) -> Image.Image:
    """Return ``source`` as an RGB PIL image.

    Paths are opened and fully decoded here, so a truncated file fails now with its name,
    not later inside a worker. Grayscale, palette and RGBA images are converted to RGB
    (alpha is dropped); 16-bit images are scaled, not clipped; the EXIF orientation is applied.
    Tensors are (3, H, W) or (H, W, 3) in [0, 1] (or uint8); arrays uint8, uint16 or float in
    [0, 1]. NaN, values outside [0, 1] (e.g. 0-255 floats) or another shape are an ImageError.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, torch.Tensor):
        return tensor_to_pil(source)
    if isinstance(source, np.ndarray):
        return array_to_pil(source)
    path = Path(source)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an image file, got a folder: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # the camera's orientation tag, as viewers show it
            return _to_rgb(img)
    except Image.DecompressionBombError as err:
        raise ImageError(f"image {path} is too large to decode safely: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"cannot read image {path}: {err} (corrupt or not an image?)") from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with 16/32-bit integer modes scaled to 8 bits (PIL's own convert clips them to 255)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(img).astype(np.float64)  # (H, W)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max(initial=0) <= 65535 else float(array.max())
        return Image.fromarray((np.clip(array / peak, 0, 1) * 255).round().astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        return array_to_pil(np.asarray(img))
    return img.convert("RGB") if img.mode != "RGB" else img


def _check_unit_range(values: np.ndarray, what: str) -> None:
    if values.size and not np.isfinite(values).all():
        raise ImageError(f"{what} holds NaN or inf values")
    if values.size and (values.min() < -1e-3 or values.max() > 1 + 1e-3):
        hint = (
            " (0-255 values? divide by 255)"
            if values.max() > 1.5
            else (" (a [-1, 1] tensor? map it with (x + 1) / 2)" if values.min() < 0 else "")
        )
        raise ImageError(f"{what} values must be in [0, 1]; got [{values.min():.3g}, {values.max():.3g}]{hint}")


def array_to_pil(source: np.ndarray) -> Image.Image:
    """(H, W), (H, W, 3) or (H, W, 4) array → RGB: uint8 as is, uint16 scaled from 0-65535,
    floats in [0, 1] (NaN or values outside are an error, not clipped)."""
    if source.ndim == 2:
        source = np.stack([source] * 3, axis=-1)
    if source.ndim != 3 or source.shape[-1] not in (1, 3, 4) or min(source.shape[:2]) < 1:
        raise ImageError(f"array image must be (H, W), (H, W, 3) or (H, W, 4); got shape {source.shape}")
    if source.dtype == np.uint16:
        source = (source.astype(np.float64) / 65535.0 * 255).round().astype(np.uint8)
    elif source.dtype == np.bool_ or np.issubdtype(source.dtype, np.integer) and source.dtype != np.uint8:
        raise ImageError(f"array image must be uint8, uint16 or float in [0, 1]; got dtype {source.dtype}")
    elif source.dtype != np.uint8:
        _check_unit_range(source.astype(np.float64), "array image")
        source = (np.clip(source, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(source[..., :3] if source.shape[-1] >= 3 else source[..., 0]).convert("RGB")


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) or (H, W, 3) float tensor in [0, 1] (or uint8) → RGB PIL image."""
    if image.ndim != 3:
        raise ImageError(f"tensor image must have 3 dims (3, H, W); got shape {tuple(image.shape)}")
    if image.shape[0] in (1, 3, 4):
        image = image.permute(1, 2, 0)  # channels first (also for an ambiguous tiny image)
    elif image.shape[-1] not in (1, 3, 4):
        raise ImageError(f"tensor image must be (3, H, W) or (H, W, 3); got shape {tuple(image.shape)}")
    array = image.detach().cpu()
    if array.dtype != torch.uint8:
        _check_unit_range(array.double().numpy(), "tensor image")
        array = (array.float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.numpy()
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return Image.fromarray(array[..., :3]).convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → (3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}  # the PIL filters a describer may ask for


def resize_for_backbone(image: Image.Image, load_size: int, resample: str = "bilinear") -> torch.Tensor:
    """The reference input transform: PIL resize to load_size² (bilinear, the hyperfeature
    reference's; DIFT's is bicubic), then [0, 1] → [-1, 1].

    Returns (3, load_size, load_size) float32.
    """
    if resample not in RESAMPLING:
        raise ImageError(f"resample must be one of {', '.join(RESAMPLING)}; got {resample!r}")
    resized = image.resize((load_size, load_size), RESAMPLING[resample])
    return pil_to_tensor(resized) * 2.0 - 1.0


def load_batch(
    sources: Sequence[ImageLike], load_size: int, resample: str = "bilinear"
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Load and preprocess several images (:func:`resize_for_backbone`).

    Returns the batch (B, 3, load_size, load_size) in [-1, 1] and each original size as (W, H).
    """
    pils = [load_image(src) for src in sources]
    batch = torch.stack([resize_for_backbone(img, load_size, resample) for img in pils])
    return batch, [img.size for img in pils]
