"""Image loading and the reference preprocessing (PIL bilinear resize, [-1, 1])."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hyperfeat.errors import ImageError

ImageLike = Union[str, Path, Image.Image, torch.Tensor, np.ndarray]




def load_image(source: ImageLike) -> Image.Image:
    """Return ``source`` as an RGB PIL image.

    Paths are opened and fully decoded here, so a truncated file fails now with its name,
    not later inside a worker. Grayscale, palette and RGBA images are converted to RGB
    (alpha is dropped). Tensors are (3, H, W) or (H, W, 3) in [0, 1]; arrays are uint8 HWC.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB") if source.mode != "RGB" else source
    if isinstance(source, torch.Tensor):
        return tensor_to_pil(source)
    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            source = np.stack([source] * 3, axis=-1)
        if source.ndim != 3 or source.shape[-1] not in (1, 3, 4):
            raise ImageError(f"array image must be (H, W), (H, W, 3) or (H, W, 4); got shape {source.shape}")
        if source.dtype != np.uint8:
            source = (np.clip(source, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(source[..., :3] if source.shape[-1] >= 3 else source[..., 0]).convert("RGB")
    path = Path(source)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageError(f"expected an image file, got a folder: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"cannot read image {path}: {err} (corrupt or not an image?)") from err




def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) or (H, W, 3) float tensor in [0, 1] (or uint8) → RGB PIL image."""
    if image.ndim != 3:
        raise ImageError(f"tensor image must have 3 dims (3, H, W); got shape {tuple(image.shape)}")
    if image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        image = image.permute(1, 2, 0)
    elif image.shape[0] in (1, 3, 4) and image.shape[-1] in (1, 3, 4):
        image = image.permute(1, 2, 0)  # ambiguous tiny image: assume channels first
    array = image.detach().cpu()
    if array.dtype != torch.uint8:
        array = (array.float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.numpy()
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return Image.fromarray(array[..., :3]).convert("RGB")




def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → (3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()




def resize_for_backbone(image: Image.Image, load_size: int) -> torch.Tensor:
    """The reference input transform: PIL bilinear resize to load_size², then [0, 1] → [-1, 1].

    Returns (3, load_size, load_size) float32.
    """
    resized = image.resize((load_size, load_size), Image.BILINEAR)
    return pil_to_tensor(resized) * 2.0 - 1.0




def load_batch(sources: Sequence[ImageLike], load_size: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Load and preprocess several images.

    Returns the batch (B, 3, load_size, load_size) in [-1, 1] and each original size as (W, H).
    """
    pils = [load_image(src) for src in sources]
    batch = torch.stack([resize_for_backbone(img, load_size) for img in pils])
    return batch, [img.size for img in pils]
