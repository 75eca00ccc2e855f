"""Shareable inference weights: a folder of ``model.safetensors`` + ``config.json`` + a model card.

The training ``.ckpt`` stays what training resumes from; this is what one loads and shares:

    folder/
      model.safetensors   the aggregation network's parameters (names as in AggregationNetwork);
                          its header metadata repeats config.json, so the file alone loads too
      config.json         {"format": "hyperfeat", "format_version", "config", "feature_dims",
                           "layers", "save_steps", "hyperfeat_version", "metrics"?, "source"?}
      README.md           model card: backbone, layers, timesteps, training data, metrics
      mixing_weights.png  the learned mixing weights, layers × timesteps

Nothing here executes code when read (safetensors and JSON only). :func:`load_pretrained`
resolves every way of naming weights: a ``.ckpt`` (through :mod:`hyperfeat.model.checkpoint`),
such a folder, a lone ``.safetensors`` file, the name of a published reference checkpoint
(``dhf-sd15`` …, downloaded once from the hub, converted and cached) or a hub repo id
(``owner/name``) holding a saved folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from omegaconf import OmegaConf

from hyperfeat.errors import CheckpointError
from hyperfeat.model.aggregation import AggregationNetwork
from hyperfeat.model.checkpoint import FORMAT_VERSION, CheckpointMeta, build_network, check_saved_config, non_finite

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
MIXING_NAME = "mixing_weights.png"
FORMAT = "hyperfeat"
METADATA_KEY = "hyperfeat"  # safetensors header entry holding the config.json text


@dataclass(frozen=True)
class OfficialWeights:
    """A published aggregation network of the reference implementation."""

    repo_id: str
    filename: str
    experiment: str  # the preset it was trained with (its features and backbone)
    description: str
    metrics: Optional[dict] = None


REFERENCE_REPO = "g-luo/diffusion-hyperfeatures"
OFFICIAL: dict[str, OfficialWeights] = {
    "dhf-sd15": OfficialWeights(
        REFERENCE_REPO,
        "weights/aggregation_network.pt",
        "sd15_spair",
        "SD 1.5, DDIM inversion with 50 steps, 11 saved timesteps, trained on SPair-71k",
        {
            "SPair-71k PCK@0.1 (bbox, 360-pair test subset, reported by the paper)": 64.61,
            "SPair-71k PCK@0.1 (img, 360-pair test subset, reported by the paper)": 72.56,
        },
    ),
    "dhf-sd15-onestep": OfficialWeights(
        REFERENCE_REPO,
        "weights/aggregation_network_one-step.pt",
        "sd15_spair_onestep",
        "SD 1.5, one UNet call on the clean latent (N = 1), trained on SPair-71k",
    ),
    "dhf-sd21": OfficialWeights(
        REFERENCE_REPO,
        "weights/aggregation_network_sdv2-1.pt",
        "sd21_spair",
        "SD 2.1 base, DDIM inversion with 50 steps, 11 saved timesteps, trained on SPair-71k",
    ),
}

Spec = Union[str, os.PathLike]


def cache_root() -> Path:
    """Where converted published weights are kept: ``HYPERFEAT_CACHE`` or ``~/.cache/hyperfeat``."""
    return Path(os.environ.get("HYPERFEAT_CACHE", Path.home() / ".cache" / "hyperfeat")).expanduser()


# ---------------------------------------------------------------------------- writing


def _shareable_config(meta: CheckpointMeta) -> dict:
    """The config without this machine's paths: ``paths`` dropped, data roots cut to their last part."""
    config = OmegaConf.to_container(meta.config, resolve=True)
    config.pop("paths", None)
    data = config.get("data")
    if isinstance(data, dict):
        for key, value in list(data.items()):
            if (key == "root" or str(key).endswith("_root")) and isinstance(value, str) and value != "generated":
                data[key] = Path(value).name
    return config


def config_record(meta: CheckpointMeta, metrics: Optional[dict] = None, source: Optional[str] = None) -> dict:
    """The content of ``config.json``."""
    from hyperfeat.version import __version__

    record = {"format": FORMAT, **meta.to_dict(), "config": _shareable_config(meta), "hyperfeat_version": __version__}
    if metrics:
        record["metrics"] = {str(k): float(v) for k, v in metrics.items()}
    if source:
        record["source"] = source
    return record


def save_pretrained(
    folder: Spec,
    network: AggregationNetwork,
    meta: CheckpointMeta,
    metrics: Optional[dict] = None,
    source: Optional[str] = None,
    card: bool = True,
    picture: Optional[Callable[[Path, AggregationNetwork, CheckpointMeta], Optional[str]]] = None,
) -> Path:
    """Write ``folder`` (see the module docstring); files are replaced atomically. Returns it.
    ``picture(path, network, meta)`` draws the card's picture to ``path`` and returns its file
    name (:func:`hyperfeat.viz.mixing.save_mixing_picture`, passed by the library's and the
    command's exports: drawing is not this module's job); without it the card has no picture."""
    from safetensors.torch import save_file

    from hyperfeat.io import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = config_record(meta, metrics, source)
    text = json.dumps(record, indent=2, sort_keys=False)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={METADATA_KEY: text}))
    atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text + "\n"))
    if card:
        drawn = picture(folder / MIXING_NAME, network, meta) if picture is not None else None
        atomic_write(folder / CARD_NAME, lambda tmp: Path(tmp).write_text(model_card(record, drawn)))
    return folder


def model_card(record: dict, picture: Optional[str] = None) -> str:
    """A model card (Markdown with the hub's YAML header) from a ``config.json`` record."""
    cfg = record["config"]
    backbone, feats, agg = cfg.get("backbone", {}), cfg.get("features", {}), cfg.get("aggregation", {})
    data = cfg.get("data", {})
    train = cfg.get("train", {})
    lines = [
        "---",
        "library_name: hyperfeat",
        "tags: [diffusion-hyperfeatures, semantic-correspondence, feature-extraction]",
        "---",
        "",
        "# Diffusion hyperfeatures: aggregation network",
        "",
        "A trained aggregation network for diffusion hyperfeatures (Luo et al., NeurIPS 2023): it mixes the",
        "decoder feature maps of a frozen Stable Diffusion UNet over layers and timesteps into one",
        "per-pixel descriptor. The backbone is not included; it is loaded by its own name.",
        "",
        "```python",
        "from hyperfeat import Hyperfeatures",
        'hf = Hyperfeatures.from_pretrained("<this repo id or folder>")',
        'desc = hf.describe(["cat1.jpg", "cat2.jpg"])  # (2, D, R, R)',
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| backbone | `{backbone.get('model')}` |",
        f"| features | {feats.get('mode')}, N = {feats.get('num_steps')}, timestep labels {record['save_steps']} |",
        f"| layers | {len(record['layers'])} decoder ResNets `up_blocks[i].resnets[j]`, (i, j) = "
        f"{', '.join('(%d, %d)' % tuple(l) for l in record['layers'])} |",
        f"| layer channels | {record['feature_dims']} |",
        f"| descriptor | D = {agg.get('projection_dim')}, {feats.get('output_resolution')}² from {feats.get('load_size')} px input |",
        f"| training config | data {data.get('name')} ({data.get('train_split') or 'no train split recorded'}), "
        f"train.max_steps {train.get('max_steps')}, lr {train.get('lr')} |",
    ]
    if record.get("source"):
        lines.append(f"| source | {record['source']} |")
    lines.append(f"| hyperfeat | {record.get('hyperfeat_version')} (format {record.get('format_version')}) |")
    metrics = record.get("metrics")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    if picture:
        lines += [
            "",
            "## Mixing weights",
            "",
            "The softmax mixing weight of every (timestep, layer) map, noisiest timestep on the left:",
            "",
            f"![mixing weights]({picture})",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- reading


def _meta_from_record(record: dict, source: str) -> CheckpointMeta:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f'{source} is not a hyperfeat config (expected "format": "{FORMAT}")')
    version = int(record.get("format_version", -1))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format version {version}; this hyperfeat reads up to {FORMAT_VERSION}: upgrade hyperfeat"
        )
    from hyperfeat.config import check_no_interpolation

    check_no_interpolation(record.get("config"), source)  # saved resolved: a ${…} was put there by hand
    check_saved_config(record.get("config"), source)
    try:
        return CheckpointMeta(
            config=OmegaConf.create(record["config"]),
            feature_dims=[int(c) for c in record["feature_dims"]],
            layers=[(int(i), int(j)) for i, j in record["layers"]],
            save_steps=[int(s) for s in record["save_steps"]],
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source} lacks or garbles a required entry: {err}") from err


def _network_from(weights: Path, meta: CheckpointMeta) -> AggregationNetwork:
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"cannot read {weights}: {err} (corrupt or not a safetensors file?)") from err
    bad = non_finite(state)
    if bad:
        raise CheckpointError(f"{weights} holds non-finite (NaN/inf) weights in {bad[:3]}: it is unusable")
    network = build_network(meta.config, meta.feature_dims)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not fit its own config: {err}") from err
    return network.eval()


def load_safetensors_file(path: Spec) -> tuple[AggregationNetwork, CheckpointMeta]:
    """A lone ``.safetensors`` written by :func:`save_pretrained` (its header holds the config)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as err:
        raise CheckpointError(f"cannot read {path}: {err} (corrupt or not a safetensors file?)") from err
    beside = path.parent / CONFIG_NAME
    if text is None and beside.is_file():
        text = beside.read_text()
    if text is None:
        raise CheckpointError(f"{path} has no hyperfeat metadata and no {CONFIG_NAME} beside it")
    try:
        record = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"cannot parse the hyperfeat metadata of {path}: {err}") from None
    meta = _meta_from_record(record, str(path))
    return _network_from(path, meta), meta


def load_folder(folder: Spec) -> tuple[AggregationNetwork, CheckpointMeta]:
    """A folder written by :func:`save_pretrained`."""
    folder = Path(folder)
    config, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    missing = [p.name for p in (config, weights) if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"{folder} is not a saved hyperfeat model: missing {', '.join(missing)} "
            f"(written by save_pretrained or `hyperfeat export`)"
        )
    try:
        record = json.loads(config.read_text())
    except ValueError as err:  # not JSON, or not UTF-8 text
        raise CheckpointError(f"cannot parse {config}: {err}") from err
    meta = _meta_from_record(record, str(config))
    return _network_from(weights, meta), meta


FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json")


def _is_hub_id(text: str) -> bool:
    """owner/name, and not a missing file such as checkpoints/last.ckpt."""
    return (
        text.count("/") == 1
        and not text.startswith((".", "/", "~"))
        and all(text.split("/"))
        and not text.lower().endswith(FILE_SUFFIXES)
    )


def load_pretrained(
    spec: Spec, revision: Optional[str] = None, cache_dir: Optional[Spec] = None, local_files_only: bool = False
) -> tuple[AggregationNetwork, CheckpointMeta]:
    """Network (eval mode, CPU) and metadata from any way of naming weights (module docstring).

    ``revision``/``cache_dir``/``local_files_only`` go to the hub download (``cache_dir``: the
    Hugging Face cache, default ``HF_HUB_CACHE``)."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        if path.suffix == ".safetensors":
            return load_safetensors_file(path)
        from hyperfeat.model.checkpoint import load_checkpoint

        return load_checkpoint(path)
    if text in OFFICIAL:
        return load_official(text, cache_dir=cache_dir, local_files_only=local_files_only)
    _refuse_local_lookalike(path, text)
    if _is_hub_id(text):
        config = hub_file(text, CONFIG_NAME, revision, cache_dir, local_files_only)
        weights = hub_file(text, WEIGHTS_NAME, revision, cache_dir, local_files_only)
        if config.parent != weights.parent:
            raise CheckpointError(f"hub repo {text}: {CONFIG_NAME} and {WEIGHTS_NAME} come from different revisions")
        return load_folder(config.parent)
    raise CheckpointError(
        f"checkpoint not found: {text} (not a file or folder, not a published name "
        f"({', '.join(OFFICIAL)}), not a hub id owner/name)"
    )


CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth")


def _refuse_local_lookalike(path: Path, text: str) -> None:
    """A missing local path that looks like a hub id (``checkpoints/last``) is a local typo, not a
    repo to download: one line, naming the file it probably meant, when that file or its folder is here."""
    near = [path.with_name(path.name + s) for s in CHECKPOINT_SUFFIXES if path.with_name(path.name + s).is_file()]
    if near:
        raise CheckpointError(f"checkpoint not found: {text}; did you mean {near[0]}? (a path needs its extension)")
    if path.parent != Path(".") and path.parent.is_dir():
        here = sorted(p.name for p in path.parent.iterdir() if p.suffix in CHECKPOINT_SUFFIXES or p.is_dir())[:6]
        raise CheckpointError(
            f"checkpoint not found: {text} (the folder {path.parent} is here, so this is a local "
            f"path, not a hub id; it holds: {', '.join(here) or 'no checkpoint'})"
        )


def hub_file(
    repo_id: str,
    filename: str,
    revision: Optional[str] = None,
    cache_dir: Optional[Spec] = None,
    local_files_only: bool = False,
) -> Path:
    """One file of a hub repo, from the cache when offline or when the hub does not answer."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from hyperfeat import hub

    cache_only, why = hub.should_use_cache_only(local_files_only)
    kwargs = dict(revision=revision, cache_dir=None if cache_dir is None else str(cache_dir), library_name="hyperfeat")
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=cache_only, **kwargs))
    except LocalEntryNotFoundError as err:
        if cache_only:
            raise CheckpointError(
                f"{repo_id}/{filename} is not in the Hugging Face cache and {why}: "
                f"{hub.offline_advice(repo_id, filename)}"
            ) from err
        raise CheckpointError(
            f"cannot download {repo_id}/{filename}: {err}; {hub.offline_advice(repo_id, filename)}"
        ) from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(f"no hub repo {repo_id!r} (or it is private: log in with `hf auth login`)") from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"hub repo {repo_id!r} has no revision {revision!r}") from err
    except EntryNotFoundError as err:
        raise CheckpointError(
            f"hub repo {repo_id!r} has no file {filename!r}: is it a hyperfeat model (save_pretrained / push_to_hub)?"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointError(f"cannot download {repo_id}/{filename}: {err}") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_config(name: str, saved: dict):
    """The config a published checkpoint was trained with: its preset, then what its own file says."""
    from hyperfeat.config import load_config
    from hyperfeat.model.convert import implied_overrides

    return load_config(overrides=[f"experiment={OFFICIAL[name].experiment}", *implied_overrides(saved)])


def load_official(
    name: str, cache_dir: Optional[Spec] = None, local_files_only: bool = False
) -> tuple[AggregationNetwork, CheckpointMeta]:
    """A published reference checkpoint by name: downloaded once into the Hugging Face cache,
    converted on first use and kept as a saved folder under :func:`cache_root` (keyed by the
    downloaded file's sha256, so a changed upload is converted again)."""
    from hyperfeat.model.checkpoint import load_checkpoint
    from hyperfeat.model.convert import convert_official, read_official

    entry = OFFICIAL[name]
    source = hub_file(entry.repo_id, entry.filename, cache_dir=cache_dir, local_files_only=local_files_only)
    digest = _sha256(source)
    target = cache_root() / "official" / f"{name}-{digest[:16]}"
    if (target / CONFIG_NAME).is_file() and (target / WEIGHTS_NAME).is_file():
        return load_folder(target)
    _, saved = read_official(source)
    cfg = official_config(name, saved)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        convert_official(source, work / "converted.ckpt", cfg)
        network, meta = load_checkpoint(work / "converted.ckpt")
        (work / "converted.ckpt").unlink()
        save_pretrained(
            work,
            network,
            meta,
            metrics=entry.metrics,
            source=f"{entry.description}; converted from {entry.repo_id}/{entry.filename} (sha256 {digest[:16]})",
        )
        try:
            os.replace(work, target)  # another process may have won the race: then keep its folder
        except OSError:
            if not (target / CONFIG_NAME).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return load_folder(target)


def push_to_hub(
    folder: Spec,
    repo_id: str,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    commit_message: str = "Upload hyperfeat model",
    revision: Optional[str] = None,
) -> Any:
    """Upload a saved folder to the hub repo ``repo_id`` (created if needed). Returns the commit info."""
    from huggingface_hub import create_repo, upload_folder

    load_folder(folder)  # only a folder that loads goes out
    create_repo(repo_id, private=private, token=token, exist_ok=True)
    return upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, token=token, revision=revision
    )
