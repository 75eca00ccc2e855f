"""Feature bank (forward hooks on decoder ResNet conv2) and the extractor: images → raw maps.

The kept map of ``up_blocks[i].resnets[j]`` is its residual branch: the output of ``conv2``,
before the shortcut is added and before ``output_scale_factor``. A forward hook on that conv
gives exactly this, without touching any forward method.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from hyperfeat.errors import ConfigError
from hyperfeat.model import schedule
from hyperfeat.model.backbone import Backbone

Layer = tuple[int, int]


MapConsumer = Callable[[int, int, torch.Tensor], None]  # (timestep index, layer index, (B, C, R, R))


def all_layers(unet: torch.nn.Module) -> list[Layer]:
    """Every decoder ResNet, (i, j) for up_blocks[i].resnets[j], in decoder order."""
    return [(i, j) for i, block in enumerate(unet.up_blocks) for j in range(len(block.resnets))]


def resolve_layers(unet: torch.nn.Module, layers) -> list[Layer]:
    """``"all"`` or a list of [i, j] → validated (i, j) tuples in the given order."""
    available = all_layers(unet)
    if layers == "all" or layers is None:
        return available
    resolved = [(int(i), int(j)) for i, j in layers]
    bad = [ij for ij in resolved if ij not in available]
    if bad:
        raise ConfigError(f"features.layers {bad} do not exist in this UNet; available: {available}")
    return resolved


def layer_module(unet: torch.nn.Module, layer: Layer) -> torch.nn.Module:
    i, j = layer
    return unet.up_blocks[i].resnets[j]


def layer_channels(unet: torch.nn.Module, layers: Sequence[Layer]) -> list[int]:
    return [int(layer_module(unet, ij).conv2.out_channels) for ij in layers]


def layer_name(layer: Layer) -> str:
    return f"up_blocks.{layer[0]}.resnets.{layer[1]}"


def resize_map(fmap: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, h, w) → (N, C, R, R): the one resize of kept maps (bilinear, align_corners=False)."""
    return F.interpolate(fmap, size=(resolution, resolution), mode="bilinear", align_corners=False)


class FeatureBank:
    """Forward hooks on the chosen layers' conv2, keeping maps only while a label is active.

    Use as a context manager: hooks are removed on exit, also after an exception. Each kept
    map is resized bilinearly (align_corners=False) to ``output_resolution`` and handed to
    ``consumer(label, layer index, map)``: the extractor's store of all maps, or a streaming
    aggregator. ``output_resolution=None`` hands the maps over at the size the UNet made them
    (the native-resolution feature cache resizes them when it reads them).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        layers: Sequence[Layer],
        output_resolution: Optional[int],
        consumer: Callable[[int, int, torch.Tensor], None],
    ):
        self.unet = unet
        self.layers = list(layers)
        self.output_resolution = None if output_resolution is None else int(output_resolution)
        self.consumer = consumer
        self.active_labels: Optional[list[int]] = None  # one label per equal chunk of the batch
        self._handles: list = []

    def __enter__(self) -> "FeatureBank":
        for index, layer in enumerate(self.layers):
            conv2 = layer_module(self.unet, layer).conv2
            self._handles.append(conv2.register_forward_hook(self._make_hook(index)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, layer_index: int):
        def hook(module, inputs, output):  # output: (n·B, C, h, w)
            if self.active_labels is None:
                return
            resized = output if self.output_resolution is None else resize_map(output, self.output_resolution)
            for label, chunk in zip(self.active_labels, resized.chunk(len(self.active_labels))):
                self.consumer(label, layer_index, chunk)

        return hook


class FeatureExtractor:
    """Runs the timestep plan on the frozen backbone and collects decoder maps."""

    def __init__(self, backbone: Backbone, features: DictConfig):
        self.backbone = backbone
        self.cfg = features
        self.layers = resolve_layers(backbone.unet, features.layers)
        self.channels = layer_channels(backbone.unet, self.layers)
        self.save_steps = [int(s) for s in features.save_steps]
        self.num_steps = int(features.num_steps)
        self.alphas = schedule.alphas_cumprod()
        self._cond_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ shapes and names
    @property
    def num_timesteps(self) -> int:
        return len(self.save_steps)

    @property
    def total_channels(self) -> int:
        return sum(self.channels)

    @property
    def layer_names(self) -> list[str]:
        return [layer_name(ij) for ij in self.layers]

    # ------------------------------------------------------------------ pieces
    def condition(self, batch_size: int, prompt: Optional[str] = None) -> torch.Tensor:
        """(B, 77, E) text condition for ``prompt`` (the config's prompt by default)."""
        prompt = self.cfg.prompt if prompt is None else prompt
        if prompt not in self._cond_cache:
            self._cond_cache[prompt] = self.backbone.encode_prompt(prompt, 1)
        cond = self._cond_cache[prompt]
        return cond.expand(batch_size, *cond.shape[1:])

    def _generators(self, batch_size: int, offset: int = 0) -> list[torch.Generator]:
        """One generator per image, each seeded alike, so an image's draw does not depend on
        its place in the batch."""
        seed = int(self.cfg.seed) + offset
        return [torch.Generator(self.backbone.device).manual_seed(seed) for _ in range(batch_size)]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → latents (B, 4, h, w) float32 (× the VAE scaling factor)."""
        size = int(self.cfg.image_size)
        images = images.to(self.backbone.device, torch.float32)
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        posterior = self.backbone.vae.encode(images.to(self.backbone.dtype)).latent_dist
        if self.cfg.latent == "mean":
            latent = posterior.mean
        else:
            latent = posterior.sample(generator=self._generators(images.shape[0]))
        return latent.float() * self.backbone.latent_scale

    def _unet(self, x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), float(t), device=x.device)
        return self.backbone.unet(x.to(self.backbone.dtype), timesteps, encoder_hidden_states=cond).sample.float()

    # ------------------------------------------------------------------ plans
    def _run_inversion(self, latents: torch.Tensor, bank: FeatureBank) -> None:
        wanted = set(self.save_steps)
        cond = self.condition(latents.shape[0])
        x = latents
        steps = schedule.steps_needed(schedule.inversion_steps(self.num_steps), self.save_steps)
        for n, step in enumerate(steps):
            bank.active_labels = [step.label] if step.label in wanted else None
            eps = self._unet(x, step.t, cond)
            if n + 1 < len(steps):
                a = schedule.alpha_at(self.alphas, step.t).to(x.device)
                a_next = schedule.alpha_at(self.alphas, step.t_next).to(x.device)
                x = schedule.ddim_update(x, eps, a, a_next)
        bank.active_labels = None

    def _run_noise(self, latents: torch.Tensor, bank: FeatureBank) -> None:
        """All labels in one UNet batch. With ``features.ensemble_size`` E > 1 this runs E times,
        member k drawing its noise from per-image generators seeded ``seed + 1 + k`` (member 0 is
        the single draw of E = 1), and each (label, layer) map handed on is the mean over the E
        draws (so the maps are held until the last draw, whatever the consumer)."""
        batch = latents.shape[0]
        ensemble = int(self.cfg.get("ensemble_size", 1))
        timesteps = schedule.label_timesteps(self.num_steps, self.save_steps)
        t = torch.tensor(timesteps, dtype=torch.float32, device=latents.device).repeat_interleave(batch)
        consumer = bank.consumer
        sums: dict[tuple[int, int], torch.Tensor] = {}
        if ensemble > 1:

            def accumulate(label: int, layer: int, fmap: torch.Tensor) -> None:
                key = (label, layer)
                sums[key] = fmap.float().clone() if key not in sums else sums[key].add_(fmap.float())

            bank.consumer = accumulate
        try:
            for member in range(ensemble):
                noise = torch.cat(
                    [
                        torch.randn(latents.shape[1:], generator=g, device=latents.device)[None]
                        for g in self._generators(batch, offset=1 + member)
                    ]
                )  # (B, 4, h, w)
                x_t = schedule.add_noise(latents, noise, self.alphas, timesteps)  # (S·B, 4, h, w)
                cond = self.condition(x_t.shape[0])
                bank.active_labels = list(self.save_steps)
                self.backbone.unet(x_t.to(self.backbone.dtype), t, encoder_hidden_states=cond)
                bank.active_labels = None
        finally:
            bank.consumer = consumer
            bank.active_labels = None
        for (label, layer), total in sums.items():
            consumer(label, layer, total / ensemble)

    def _run_generation(self, latents: torch.Tensor, bank: FeatureBank, prompt: Optional[str]) -> torch.Tensor:
        wanted = set(self.save_steps)
        cond = self.condition(latents.shape[0], prompt)
        guidance = float(self.cfg.guidance_scale)
        uncond = self.condition(latents.shape[0], "") if guidance > 1 else None
        x = latents
        for step in schedule.generation_steps(self.num_steps):
            if uncond is not None:
                bank.active_labels = None
                eps_uncond = self._unet(x, step.t, uncond)
            # with guidance the kept maps are those of the conditional call, as in the reference
            bank.active_labels = [step.label] if step.label in wanted else None
            eps = self._unet(x, step.t, cond)
            if uncond is not None:
                eps = eps_uncond + guidance * (eps - eps_uncond)
            a = schedule.alpha_at(self.alphas, step.t).to(x.device)
            a_next = schedule.alpha_at(self.alphas, step.t_next).to(x.device)
            x = schedule.ddim_update(x, eps, a, a_next)
        bank.active_labels = None
        return x

    def run(self, images: torch.Tensor, consumer: Optional[MapConsumer] = None) -> Optional[torch.Tensor]:
        """Run the plan on images (B, 3, H, W) in [-1, 1].

        With no ``consumer``, returns raw maps (B, S, C, R, R) float32: timesteps in save_steps
        order, layers concatenated in decoder order. With a consumer, calls
        ``consumer(timestep_index, layer_index, map)`` for each map as it is made and returns None.
        """
        if self.cfg.mode == "generation":
            raise ConfigError("features.mode=generation makes images from a prompt; use generate(), not run(images)")
        latents = self.encode(images)
        return self._collect(
            lambda bank: (
                self._run_inversion(latents, bank) if self.cfg.mode == "inversion" else self._run_noise(latents, bank)
            ),
            consumer,
        )

    def run_native(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Run the plan on images (B, 3, H, W) in [-1, 1]; the maps at the size the UNet made them.

        Returns one tensor per layer, (B, S, C_l, h_l, w_l) float32 (timesteps in save_steps
        order); ``resize_map`` of each to ``output_resolution``, concatenated over layers, is
        what :meth:`run` returns.
        """
        if self.cfg.mode == "generation":
            raise ConfigError("features.mode=generation makes images from a prompt; use generate(), not run(images)")
        latents = self.encode(images)
        maps: dict[tuple[int, int], torch.Tensor] = {}

        def keep(s: int, layer: int, fmap: torch.Tensor) -> None:  # fmap: (B, C_l, h, w)
            maps[(s, layer)] = fmap

        self._collect(
            lambda bank: (
                self._run_inversion(latents, bank) if self.cfg.mode == "inversion" else self._run_noise(latents, bank)
            ),
            keep,
            resolution=None,
        )
        return [
            torch.stack([maps[(s, layer)] for s in range(self.num_timesteps)], dim=1)
            for layer in range(len(self.layers))
        ]

    def generate(
        self, num_images: int, prompt: Optional[str] = None, consumer: Optional[MapConsumer] = None
    ) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """Sample images from noise with DDIM; returns (raw maps or None, images (B, 3, H, W) in [0, 1])."""
        size = int(self.cfg.image_size) // 8
        gens = self._generators(num_images)
        latents = torch.cat(
            [
                torch.randn((1, self.backbone.latent_channels, size, size), generator=g, device=self.backbone.device)
                for g in gens
            ]
        )
        final: dict[str, torch.Tensor] = {}

        def plan(bank: FeatureBank) -> None:
            final["x"] = self._run_generation(latents, bank, prompt)

        raw = self._collect(plan, consumer)
        with torch.no_grad():
            decoded = self.backbone.vae.decode((final["x"] / self.backbone.latent_scale).to(self.backbone.dtype)).sample
        return raw, (decoded.float() / 2 + 0.5).clamp(0, 1)

    def _collect(
        self,
        plan: Callable[[FeatureBank], None],
        consumer: Optional[MapConsumer],
        resolution: Optional[int] | str = "output",
    ) -> Optional[torch.Tensor]:
        grad_wanted = torch.is_grad_enabled()
        resolution = int(self.cfg.output_resolution) if resolution == "output" else resolution
        with torch.no_grad():
            return self._collect_no_grad(plan, consumer, grad_wanted, resolution)

    def _collect_no_grad(self, plan, consumer, grad_wanted: bool, resolution: Optional[int]) -> Optional[torch.Tensor]:
        index_of = {label: s for s, label in enumerate(self.save_steps)}
        if consumer is not None:

            def hook_consumer(label: int, layer: int, fmap: torch.Tensor) -> None:
                # the backbone runs without grad; the consumer (e.g. a trainable aggregation
                # network) gets grad back if the caller had it on
                with torch.set_grad_enabled(grad_wanted):
                    consumer(index_of[label], layer, fmap.float())
        else:
            store = _RawStore(self.channels, len(self.save_steps))
            hook_consumer = lambda label, layer, fmap: store.write(index_of[label], layer, fmap)  # noqa: E731
        with FeatureBank(self.backbone.unet, self.layers, resolution, hook_consumer) as bank:
            plan(bank)
        return None if consumer is not None else store.result()


class _RawStore:
    """Writes each kept map straight into one preallocated (B, S, C, R, R) float32 tensor, so
    the store-all path holds the maps once (no per-step concatenation and stacking copies)."""

    def __init__(self, channels: Sequence[int], num_timesteps: int):
        self.channels = list(channels)
        self.offsets = [sum(self.channels[:l]) for l in range(len(self.channels))]
        self.num_timesteps = num_timesteps
        self.raw: Optional[torch.Tensor] = None
        self.written: set[tuple[int, int]] = set()

    def write(self, timestep_index: int, layer: int, fmap: torch.Tensor) -> None:  # fmap: (B, C_l, R, R)
        if self.raw is None:
            batch, _, height, width = fmap.shape
            self.raw = torch.empty(
                (batch, self.num_timesteps, sum(self.channels), height, width), dtype=torch.float32, device=fmap.device
            )
        start = self.offsets[layer]
        self.raw[:, timestep_index, start : start + self.channels[layer]].copy_(fmap)
        self.written.add((timestep_index, layer))

    def result(self) -> torch.Tensor:
        expected = self.num_timesteps * len(self.channels)
        if self.raw is None or len(self.written) != expected:
            raise RuntimeError(f"feature bank kept {len(self.written)} of {expected} (timestep, layer) maps")
        return self.raw  # (B, S, C, R, R)
