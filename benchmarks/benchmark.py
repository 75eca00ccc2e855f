"""Memory and speed of feature extraction (store-all vs streaming) and of training (recompute vs cache).

    python benchmarks/benchmark.py                      # CPU: 128 px, single thread, a few minutes
    python benchmarks/benchmark.py --device cuda        # GPU: 512 px, float16
    python benchmarks/benchmark.py --quick              # a smoke run

Backbones: ``sd15``, a randomly initialised model of Stable Diffusion 1.5's size (UNet, VAE and a
CLIP text encoder built from SD 1.5's config values; random weights cost what real ones do, and
no download is needed), and ``tiny``, the test model. Prints tables and writes JSON to ``--out``.
See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hyperfeat.config import load_config  # noqa: E402
from hyperfeat.model.aggregation import AggregationNetwork, StreamingAggregator  # noqa: E402
from hyperfeat.model.backbone import Backbone  # noqa: E402
from hyperfeat.model.features import FeatureBank, FeatureExtractor  # noqa: E402
from hyperfeat.testing import random_sd15_backbone, tiny_backbone  # noqa: E402
from hyperfeat.train.cache import FeatureCache  # noqa: E402
from hyperfeat.train.losses import correspondence_loss  # noqa: E402

# the paper's settings are the config defaults: read them there, never copy them
PAPER = load_config()
PAPER_STEPS = [int(s) for s in PAPER.features.save_steps]  # the 11 labels 49, 45, …, 0
PAPER_NUM_STEPS = int(PAPER.features.num_steps)  # N = 50
PAPER_S = len(PAPER_STEPS)
NOISE_NUM_STEPS = PAPER_NUM_STEPS  # noise mode spreads its labels over the same N
PAPER_SIZE = int(PAPER.features.image_size)  # 512
RESOLUTION_DIVISOR = PAPER_SIZE // int(PAPER.features.output_resolution)  # 512 px → R = 64: size / 8
PROJECTION_DIM = int(PAPER.aggregation.projection_dim)  # 384
MB = 2**20


# ----------------------------------------------------------------------------- backbones
# sd15: SD 1.5's sizes with random weights (hyperfeat.testing.random_sd15_backbone); tiny: the test model


def sd15_random(device: torch.device, dtype: torch.dtype) -> Backbone:
    return random_sd15_backbone(device, dtype, seed=0)


def tiny(device: torch.device, dtype: torch.dtype) -> Backbone:
    return tiny_backbone(device, dtype, seed=0)


BACKBONES: dict[str, Callable[[torch.device, torch.dtype], Backbone]] = {"sd15": sd15_random, "tiny": tiny}


# ----------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def exact_cpu_peaks() -> bool:
    """Fix glibc's mmap threshold at 128 KiB (it otherwise grows to 32 MiB as memory is freed): every
    tensor of 128 KiB or more gets its own pages and hands them back when freed, so the resident-set
    high-water mark follows live tensors to the page. Costs some speed, alike for every path."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        return False


class PeakMemory:
    """Peak memory above the level at entry: the CUDA allocator's peak on a GPU; on a CPU the
    process's resident-set high-water mark (Linux: reset through /proc/self/clear_refs, after
    freed heap memory is handed back with malloc_trim, so one process can measure many blocks)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak: Optional[float] = None  # bytes

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset the peak RSS to the current RSS
            self.base = _proc_status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak = _proc_status_kb("VmHWM") * 1024 - self.base


class UNetTimer:
    """Wall time spent inside the UNet's forward calls."""

    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.unet, self.device = unet, device
        self.seconds, self.calls = 0.0, 0

    def _pre(self, module, args):
        _sync(self.device)
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        _sync(self.device)
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def __enter__(self) -> "UNetTimer":
        self._handles = [self.unet.register_forward_pre_hook(self._pre), self.unet.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


class HookTimer:
    """Wall time spent in the feature bank's hooks (resize, then store or stream), which run inside
    the UNet's forward calls: wraps each hook the bank makes while the block is open."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> "HookTimer":
        self._make_hook = make_hook = FeatureBank._make_hook

        def timed_make_hook(bank: FeatureBank, layer_index: int):
            hook = make_hook(bank, layer_index)

            def timed_hook(module, inputs, output):
                _sync(self.device)
                start = time.perf_counter()
                result = hook(module, inputs, output)
                _sync(self.device)
                self.seconds += time.perf_counter() - start
                return result

            return timed_hook

        FeatureBank._make_hook = timed_make_hook
        return self

    def __exit__(self, *exc) -> None:
        FeatureBank._make_hook = self._make_hook


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def save_steps_for(num_timesteps: int, num_steps: int) -> list[int]:
    """S labels spread over 0 … N-1, highest first; the paper's labels (the config default) for its S and N."""
    if num_timesteps == PAPER_S and num_steps == PAPER_NUM_STEPS:
        return list(PAPER_STEPS)
    if num_timesteps == 1:
        return [0]
    labels = {round((num_steps - 1) * (1 - i / (num_timesteps - 1))) for i in range(num_timesteps)}
    if len(labels) != num_timesteps:
        raise ValueError(f"cannot pick {num_timesteps} distinct labels from {num_steps} steps")
    return sorted(labels, reverse=True)


def features_cfg(size: int, mode: str, num_steps: int, save_steps: list[int], batch: int) -> DictConfig:
    features = load_config().features
    return OmegaConf.merge(
        features,
        {
            "mode": mode,
            "num_steps": num_steps,
            "save_steps": save_steps,
            "load_size": size,
            "image_size": size,
            "output_resolution": size // RESOLUTION_DIVISOR,
            "batch_size": batch,
        },
    )


def make_network(extractor: FeatureExtractor, device: torch.device) -> AggregationNetwork:
    torch.manual_seed(0)
    return AggregationNetwork(extractor.channels, extractor.num_timesteps, PROJECTION_DIM).to(device)


# ----------------------------------------------------------------------------- extraction


def measure_extraction(
    backbone: Backbone, name: str, features: DictConfig, images: torch.Tensor, warm_batches: set[int]
) -> list[dict]:
    """UNet calls alone, store-all and streaming for one plan: seconds and peak memory of each.

    ``warm_batches``: UNet batch sizes already run; a new one is run once first, unmeasured, so
    that kernel set-up and allocator caches of new shapes count in no measurement.
    """
    device = backbone.device
    extractor = FeatureExtractor(backbone, features)
    unet_only = FeatureExtractor(backbone, OmegaConf.merge(features, {"layers": []}))  # the same plan, no hooks
    network = make_network(extractor, device)
    batch = images.shape[0]
    with torch.no_grad():
        latents, t_encode = timed(lambda: extractor.encode(images), device)
        # the VAE runs once, outside the measured blocks: every block below starts from the latents
        extractor.encode = unet_only.encode = lambda _images: latents

        unet_batch = batch * (len(features.save_steps) if features.mode == "noise" else 1)
        if unet_batch not in warm_batches:
            unet_only.run(images, consumer=lambda *a: None)
            warm_batches.add(unet_batch)

        with PeakMemory(device) as m_unet, UNetTimer(backbone.unet, device) as unet_timer:
            _, t_plan = timed(lambda: unet_only.run(images, consumer=lambda *a: None), device)

        with PeakMemory(device) as m_store, UNetTimer(backbone.unet, device) as in_unet, HookTimer(device) as hooks:
            raw, t_extract = timed(lambda: extractor.run(images), device)  # (B, S, C, R, R)
            desc, t_aggregate = timed(lambda maps=raw: network(maps), device)  # (B, D, R, R)
            feature_bytes = raw.numel() * raw.element_size()
            del raw, desc

        def stream() -> torch.Tensor:
            aggregator = StreamingAggregator(network)
            extractor.run(images, consumer=aggregator.add)
            return aggregator.result()

        with PeakMemory(device) as m_stream:
            desc, t_stream = timed(stream, device)
            del desc

    common = {
        "backbone": name,
        "size": int(features.image_size),
        "resolution": int(features.output_resolution),
        "mode": str(features.mode),
        "num_steps": int(features.num_steps),
        "timesteps": len(features.save_steps),
        "batch": batch,
        "encode_s": t_encode,
        "unet_s": unet_timer.seconds,
        "unet_calls": unet_timer.calls,
        "feature_tensor_mb": feature_bytes / MB,
    }
    extraction_s = t_encode + t_extract
    unet_proper = in_unet.seconds - hooks.seconds  # the store-all run's UNet calls, less the feature hooks
    rows = [
        {**common, "path": "unet-only", "seconds": t_encode + t_plan, "peak_mb": m_unet.peak / MB},
        {
            **common,
            "path": "store-all",
            "seconds": extraction_s + t_aggregate,
            "extract_s": t_extract,
            "aggregate_s": t_aggregate,
            "peak_mb": m_store.peak / MB,
            "hooks_s": hooks.seconds,
            "vae_share": t_encode / extraction_s,
            "outside_unet_share": (extraction_s - unet_proper) / extraction_s,
        },
        {**common, "path": "streaming", "seconds": t_encode + t_stream, "peak_mb": m_stream.peak / MB},
    ]
    for row in rows:
        row["images_per_s"] = batch / row["seconds"]
        row["feature_mb"] = None if row["path"] == "unet-only" else row["peak_mb"] - rows[0]["peak_mb"]
    return rows


def warm_up(backbone: Backbone, size: int, images: torch.Tensor, batch: int) -> None:
    """First calls build kernels and caches; keep them out of every measurement."""
    extractor = FeatureExtractor(backbone, features_cfg(size, "noise", NOISE_NUM_STEPS, [0], batch))
    network = make_network(extractor, backbone.device)
    with torch.no_grad():
        network(extractor.run(images))
        aggregator = StreamingAggregator(network)
        extractor.run(images, consumer=aggregator.add)


# ----------------------------------------------------------------------------- training


def measure_training(
    backbone: Backbone,
    name: str,
    size: int,
    pairs: int,
    num_timesteps: int,
    inversion_steps: int,
    cached_steps: int,
    cache_root: Path,
) -> dict:
    """Pairs/s of a training step that recomputes features vs one that reads them from a FeatureCache."""
    device = backbone.device
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2 * pairs, 3, size, size, generator=g) * 2 - 1  # sources then targets
    points_a = torch.rand(pairs, 20, 2, generator=g) * (size - 1)
    points_b = torch.rand(pairs, 20, 2, generator=g) * (size - 1)
    valid = torch.ones(pairs, 20, dtype=torch.bool)
    plans = {
        "noise": features_cfg(
            size, "noise", NOISE_NUM_STEPS, save_steps_for(num_timesteps, NOISE_NUM_STEPS), 2 * pairs
        ),
        "inversion": features_cfg(
            size, "inversion", inversion_steps, save_steps_for(num_timesteps, inversion_steps), 2 * pairs
        ),
    }
    extractor = FeatureExtractor(backbone, plans["noise"])
    network = make_network(extractor, device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)

    def aggregation_step(raw: torch.Tensor) -> None:  # raw (2P, S, C, R, R)
        desc = network(raw)
        loss = correspondence_loss(desc[:pairs], desc[pairs:], points_a, points_b, valid, load_size=size)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    dtype_name = str(backbone.dtype).removeprefix("torch.")
    cfg = load_config(
        overrides=[
            f"backbone.model={backbone.model_id}",
            f"backbone.dtype={dtype_name}",
            f"backbone.device={device}",
            "train.cache_dtype=float16",
        ]
    )
    cfg.features = plans["noise"]
    cache = FeatureCache(cache_root, cfg)
    _, t_fill = timed(lambda: cache.get_or_compute(images, extractor), device)

    def read() -> torch.Tensor:  # what CachedPairDataset + collate + the module do
        return torch.stack([cache.get(img) for img in images]).to(device, non_blocking=True).float()

    aggregation_step(read())  # warm-up
    _, t_read = timed(read, device)
    t_cached = min(timed(lambda: aggregation_step(read()), device)[1] for _ in range(cached_steps))

    result = {
        "backbone": name,
        "size": size,
        "resolution": size // RESOLUTION_DIVISOR,
        "timesteps": num_timesteps,
        "pairs_per_step": pairs,
        "fill_s_per_image": t_fill / len(images),
        "read_s": t_read,
        "cached_step_s": t_cached,
        "cached_pairs_per_s": pairs / t_cached,
        # the file on disk (native-resolution maps); a read hands out (S, C, R, R) at read_dtype
        "cache_mb_per_image": sum(cache.path(cache.key(img)).stat().st_size for img in images) / len(images) / MB,
        "recompute": {},
    }
    for plan, features in plans.items():
        plan_extractor = FeatureExtractor(backbone, features)
        with UNetTimer(backbone.unet, device) as unet_timer:
            _, t_step = timed(lambda: aggregation_step(plan_extractor.run(images).to(device)), device)
        entry = {
            "num_steps": int(features.num_steps),
            "step_s": t_step,
            "pairs_per_s": pairs / t_step,
            "unet_calls": unet_timer.calls,
            "unet_s": unet_timer.seconds,
            "speedup": t_step / t_cached,
        }
        if plan == "inversion" and inversion_steps != PAPER_NUM_STEPS:
            # the paper's plan makes PAPER_NUM_STEPS calls of the same cost: add the missing ones
            per_call = unet_timer.seconds / unet_timer.calls
            paper_s = t_step + (PAPER_NUM_STEPS - unet_timer.calls) * per_call
            entry["paper_extrapolated"] = {
                "num_steps": PAPER_NUM_STEPS,
                "step_s": paper_s,
                "pairs_per_s": pairs / paper_s,
                "speedup": paper_s / t_cached,
            }
        result["recompute"][plan] = entry
    return result


# ----------------------------------------------------------------------------- report


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def extraction_table(rows: list[dict]) -> str:
    lines = [
        "| backbone | px | R | mode | N | S | path | img/s | peak MB | feature MB | feature tensor MB "
        "| outside UNet (VAE) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        outside = (
            f"{100 * r['outside_unet_share']:.1f}% ({100 * r['vae_share']:.1f}%)" if "outside_unet_share" in r else ""
        )
        lines.append(
            f"| {r['backbone']} | {r['size']} | {r['resolution']} | {r['mode']} | {r['num_steps']} | {r['timesteps']} "
            f"| {r['path']} | {_fmt(r['images_per_s'], 3)} | {_fmt(r['peak_mb'])} | {_fmt(r['feature_mb'])} "
            f"| {_fmt(r['feature_tensor_mb'])} | {outside} |"
        )
    return "\n".join(lines)


def training_table(results: list[dict]) -> str:
    lines = [
        "| backbone | px | S | pairs/step | path | UNet calls/image | step s | pairs/s | cached speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in results:
        head = f"| {t['backbone']} | {t['size']} | {t['timesteps']} | {t['pairs_per_step']} "
        lines.append(
            head + f"| cached ({t['cache_mb_per_image']:.1f} MB/image) | 0 | {t['cached_step_s']:.3f} "
            f"| {t['cached_pairs_per_s']:.3f} | 1× |"
        )
        for plan, e in t["recompute"].items():
            calls = e["unet_calls"] if plan == "inversion" else f"1 (batch of {t['timesteps']})"
            lines.append(
                head + f"| recompute, {plan} N={e['num_steps']} | {calls} | {e['step_s']:.3f} "
                f"| {e['pairs_per_s']:.3f} | {e['speedup']:.1f}× |"
            )
            if "paper_extrapolated" in e:
                p = e["paper_extrapolated"]
                lines.append(
                    head + f"| recompute, inversion N={p['num_steps']} (extrapolated) | {p['num_steps']} "
                    f"| {p['step_s']:.3f} | {p['pairs_per_s']:.3f} | {p['speedup']:.1f}× |"
                )
    return "\n".join(lines)


def goals(rows: list[dict], training: list[dict]) -> list[dict]:
    """The three targets, judged on the sd15 rows (the tiny model is no guide to real costs)."""
    out = []
    sweep = [r for r in rows if r["backbone"] == "sd15" and r["mode"] == "noise"]
    stream = {r["timesteps"]: r["feature_mb"] for r in sweep if r["path"] == "streaming"}
    store = {r["timesteps"]: r["feature_mb"] for r in sweep if r["path"] == "store-all"}
    if len(stream) >= 2:
        lo, hi = min(stream), max(stream)
        stream_growth = (stream[hi] - stream[lo]) / (hi - lo)
        store_growth = (store[hi] - store[lo]) / (hi - lo)
        out.append(
            {
                "goal": "streaming feature memory flat in S (growth per timestep ≤ 10% of store-all's)",
                "value": f"{stream_growth:.1f} vs {store_growth:.1f} MB per added timestep (S {lo}→{hi})",
                "met": stream_growth <= 0.1 * store_growth,
            }
        )
    s = PAPER_S if PAPER_S in stream else (max(stream) if stream else None)
    if s is not None:
        ratio = stream[s] / store[s] if store[s] else float("nan")
        out.append(
            {
                "goal": f"streaming feature memory ≤ 1/4 of store-all's at S={s}",
                "value": f"{stream[s]:.1f} / {store[s]:.1f} MB = {ratio:.3f}",
                "met": ratio <= 0.25,
            }
        )
    for t in (t for t in training if t["backbone"] == "sd15"):
        for plan, e in t["recompute"].items():
            e = e.get("paper_extrapolated", e)
            out.append(
                {
                    "goal": f"cached training ≥ 20× recompute ({plan}, N={e['num_steps']}, S={t['timesteps']})",
                    "value": f"{e['speedup']:.1f}×",
                    "met": e["speedup"] >= 20,
                }
            )
    for r in rows:
        if r["backbone"] == "sd15" and r["path"] == "store-all" and r["timesteps"] in (PAPER_S, max(stream or [0])):
            out.append(
                {
                    "goal": f"outside-UNet share ≤ 10% ({r['mode']}, N={r['num_steps']}, S={r['timesteps']})",
                    "value": f"{100 * r['outside_unet_share']:.1f}% (VAE encode {100 * r['vae_share']:.1f}%)",
                    "met": r["outside_unet_share"] <= 0.10,
                }
            )
    return out


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ----------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--sizes", type=int, nargs="+", help=f"image sizes in px (default: 128 on cpu, {PAPER_SIZE} on cuda)"
    )
    p.add_argument("--timesteps", type=int, nargs="+", help=f"saved timesteps S of the sweep (default: 1 {PAPER_S} 25)")
    p.add_argument("--batch", type=int, help="images per extraction (default: 1)")
    p.add_argument("--pairs", type=int, help="pairs per training step (default: 1 on cpu, 2 on cuda)")
    p.add_argument(
        "--inversion-steps",
        type=int,
        help=f"N of the inversion plan (default: {PAPER_S} on cpu, {PAPER_NUM_STEPS} on cuda)",
    )
    p.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), default=["sd15", "tiny"])
    p.add_argument("--threads", type=int, help="CPU threads (default: 1 on cpu, torch's default on cuda)")
    p.add_argument("--quick", action="store_true", help="small sizes and few timesteps: a smoke run")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results.json"))
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.exit(
            2,
            f"error: --device cuda, but this PyTorch ({torch.__version__}) "
            f"{'is a CPU-only build' if torch.version.cuda is None else 'sees no CUDA device'}: "
            "install PyTorch's CUDA build on a machine with a GPU, or use --device cpu\n",
        )
    cpu = args.device == "cpu"
    if args.quick:
        args.sizes = args.sizes or [64 if cpu else 256]
        args.timesteps = args.timesteps or [1, 3]
        args.inversion_steps = args.inversion_steps or 5
    args.sizes = args.sizes or [128 if cpu else PAPER_SIZE]
    args.timesteps = args.timesteps or [1, PAPER_S, 25]
    args.batch = args.batch or 1
    args.pairs = args.pairs or (1 if cpu else 2)
    args.inversion_steps = args.inversion_steps or (PAPER_S if cpu else PAPER_NUM_STEPS)
    args.threads = args.threads or (1 if cpu else None)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    exact = exact_cpu_peaks() if device.type == "cpu" else None
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    train_s = PAPER_S if PAPER_S in args.timesteps else max(args.timesteps)
    inversion_s = min(train_s, args.inversion_steps)
    rows: list[dict] = []
    training: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hyperfeat-bench-") as cache_root:
        for name in args.backbones:
            backbone, t_build = timed(lambda: BACKBONES[name](device, dtype), device)
            print(f"[{name}] built in {t_build:.1f} s", flush=True)
            for size in args.sizes:
                g = torch.Generator().manual_seed(0)
                images = torch.rand(args.batch, 3, size, size, generator=g) * 2 - 1
                warm_up(backbone, size, images, args.batch)
                warm_batches = {args.batch}
                plans = [("noise", NOISE_NUM_STEPS, s) for s in args.timesteps]
                plans.append(("inversion", args.inversion_steps, inversion_s))
                for mode, num_steps, s in plans:
                    features = features_cfg(size, mode, num_steps, save_steps_for(s, num_steps), args.batch)
                    rows.extend(measure_extraction(backbone, name, features, images, warm_batches))
                    print(
                        f"[{name}] {size} px {mode} N={num_steps} S={s}: "
                        + ", ".join(f"{r['path']} {r['seconds']:.2f} s {r['peak_mb']:.0f} MB" for r in rows[-3:]),
                        flush=True,
                    )
                training.append(
                    measure_training(
                        backbone,
                        name,
                        size,
                        args.pairs,
                        train_s,
                        args.inversion_steps,
                        cached_steps=3,
                        cache_root=Path(cache_root),
                    )
                )
                print(
                    f"[{name}] {size} px training: cached {training[-1]['cached_pairs_per_s']:.3f} pairs/s", flush=True
                )
            del backbone
            gc.collect()
    verdicts = goals(rows, training)
    report = {
        "machine": machine(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "cpu_mmap_threshold_fixed": exact,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "total_s": time.perf_counter() - started,
        "extraction": rows,
        "training": training,
        "goals": verdicts,
    }
    print("\nextraction + aggregation (feature MB = peak − peak of the UNet calls alone)\n")
    print(extraction_table(rows))
    print("\ntraining step (aggregation forward + backward + AdamW)\n")
    print(training_table(training))
    print("\ngoals\n")
    for v in verdicts:
        print(f"- {'met   ' if v['met'] else 'MISSED'}  {v['goal']}: {v['value']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out} ({report['total_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
