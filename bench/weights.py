"""Shareable weights: safetensors files with a JSON sidecar, written and read only here.

The format (docs/FORMATS.md, "Weights"): ``<name>.safetensors`` holds U-Net parameters
under the U-Net's own state-dict keys (``encoder.stem.conv_0.conv.weight``, ...); when
clients hold different weights (local pretraining, local fine-tuning), each key is
prefixed ``client<k>/``. ``<name>.json`` (the sidecar) says what they are: method, parts,
model config, config and split hashes, code version, data preprocessing, and the
SHA-256 of the tensor file. The same description is embedded in the safetensors header
(metadata key ``bench``), so an exported file alone is enough to rebuild its model.

Nothing is unpickled: safetensors holds only tensors and strings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from bench.datasets.errors import DataError
from bench.io import atomic_write_bytes, atomic_write_text

FORMAT = "bench-weights"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
KINDS = ("pretrained", "finetuned", "export")


class WeightsError(DataError):
    """A weights file that is missing, unreadable, or does not fit the model."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def describe(
    kind: str, *, method: str, config: dict, split_hash: str | None, dataset: str | None, **extra
) -> dict:
    """The sidecar's fields common to every weights file (``extra``: seed, mode, N, ...)."""
    from bench.config import as_section, config_hash
    from bench.config_schema import Config
    from bench.provenance import code_version, library_versions

    config = as_section(Config, config)
    if kind not in KINDS:
        raise ValueError(f"weights kind {kind!r}; expected one of {KINDS}")
    data = config.data
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "method": method,
        **extra,
        "model": {"in_channels": 1, **config.model},
        "preprocessing": {
            "dataset": dataset,
            "phases": data.phases,
            **data.preprocess,
            "input": "one channel, 2D slices of the preprocessed volume (float32)",
        },
        "config_hash": config_hash(config),
        "split_hash": split_hash,
        "code_version": code_version(),
        "versions": json.loads(library_versions()),
    }


def save_weights(path: str | Path, clients: list[dict[str, dict]], meta: dict) -> Path:
    """Writes per-client ``{part: state_dict}`` and the sidecar; returns the tensor file.

    Identical clients (FedAvg) are stored once (``"clients": "shared"``).
    """
    path = Path(path)
    if not clients or not all(clients):
        raise ValueError(f"{path}: nothing to save (no client or a client without parts)")
    flat = [_flatten(parts) for parts in clients]
    shared = all(_equal(flat[0], other) for other in flat[1:])
    if shared:
        tensors = flat[0]
    else:
        tensors = {
            f"client{k}/{key}": value for k, one in enumerate(flat) for key, value in one.items()
        }
    meta = {
        **meta,
        "parts": sorted(clients[0]),
        "clients": "shared" if shared else len(clients),
        "num_clients": len(clients),
    }
    header = json.dumps(meta, sort_keys=True)
    blob = save_safetensors(tensors, metadata={"bench": header})
    atomic_write_bytes(path, blob)
    sidecar = {**meta, "tensors": path.name, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_text(sidecar_path(path), json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
    return path


def read_weights(path: str | Path) -> tuple[list[dict[str, dict]], dict]:
    """Per-client ``{part: state_dict}`` and the description, checked against the sidecar."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise WeightsError(path, f"cannot read ({error.strerror or error})") from None
    try:
        tensors = load_safetensors(blob)
        meta = json.loads(_header_metadata(blob).get("bench", "null"))
    except (SafetensorError, ValueError) as error:
        raise WeightsError(
            path,
            f"not a safetensors weights file ({error}); bench reads weights only as "
            "safetensors and never unpickles them",
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsError(path, f"no {FORMAT} description in its header; not written by bench")
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            path, f"format version {meta.get('format_version')}; this bench reads {FORMAT_VERSION}"
        )
    missing = [
        key for key in ("method", "model", "parts", "clients", "num_clients") if key not in meta
    ]
    if missing:
        raise WeightsError(path, f"its description lacks {', '.join(missing)}")
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            recorded = json.loads(sidecar.read_text()).get("sha256")
        except (OSError, ValueError, AttributeError) as error:
            raise WeightsError(sidecar, f"unreadable sidecar ({error})") from None
        if recorded != hashlib.sha256(blob).hexdigest():
            raise WeightsError(path, f"its SHA-256 does not match {sidecar.name}; file changed")
    try:
        clients = _per_client(tensors, meta)
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(path, f"inconsistent header ({type(error).__name__}: {error})") from None
    for k, parts in enumerate(clients):
        if sorted(parts) != sorted(meta["parts"]):
            raise WeightsError(
                path, f"client {k} holds parts {sorted(parts)}, the header says {meta['parts']}"
            )
    return clients, meta


def _per_client(tensors: dict, meta: dict) -> list[dict]:
    count = int(meta["num_clients"])
    if meta["clients"] == "shared":
        clients = [_unflatten(tensors)] * count
    else:
        clients = [
            _unflatten(
                {
                    key.split("/", 1)[1]: value
                    for key, value in tensors.items()
                    if key.startswith(f"client{k}/")
                }
            )
            for k in range(count)
        ]
    return clients


def check_parts(path: str | Path, parts: dict[str, dict], model: nn.Module, expected) -> None:
    """The parts are exactly ``expected`` and each matches the model's part key for key, shape
    for shape; an empty state is refused (it would silently equal random initialisation)."""
    if sorted(parts) != sorted(expected):
        raise WeightsError(
            path,
            f"holds parts {sorted(parts) or 'none'}; the method's fine-tuning loads "
            f"{sorted(expected)}",
        )
    for name, state in parts.items():
        wanted = getattr(model, name).state_dict()
        if not state:
            raise WeightsError(path, f"part {name!r} is empty")
        missing = sorted(set(wanted) - set(state))
        extra = sorted(set(state) - set(wanted))
        if missing or extra:
            raise WeightsError(
                path,
                f"part {name!r} does not fit this model: "
                f"{len(missing)} missing key(s) {missing[:3]}, {len(extra)} unexpected {extra[:3]}",
            )
        for key, tensor in state.items():
            if tuple(tensor.shape) != tuple(wanted[key].shape):
                raise WeightsError(
                    path,
                    f"{name}.{key} has shape {tuple(tensor.shape)}, the model's is "
                    f"{tuple(wanted[key].shape)} (another model config?)",
                )


# -- the run folder's files ---------------------------------------------------


def pretrained_path(run_dir: str | Path, method: str, seed: int) -> Path:
    return Path(run_dir) / "pretrained" / f"{method}-seed{seed}{SUFFIX}"


def finetuned_path(run_dir: str | Path, method: str, seed: int, mode: str, n: int) -> Path:
    return Path(run_dir) / "models" / f"{method}-seed{seed}-{mode}-N{n}{SUFFIX}"


def read_pretrained(path: str | Path, model: nn.Module, expected_parts) -> list[dict]:
    """Per-client parts of a pretrained file, each checked against ``model``."""
    clients, _ = read_weights(path)
    for parts in clients:
        check_parts(path, parts, model, expected_parts)
    return clients


def load_finetuned(path: str | Path, model: nn.Module) -> nn.Module:
    """Loads a ``models/`` file (one client's whole fine-tuned U-Net) into ``model``."""
    clients, _ = read_weights(path)
    check_parts(path, clients[0], model, [name for name, _ in model.named_children()])
    for name, state in clients[0].items():
        getattr(model, name).load_state_dict(state)
    return model


# -- outside bench --------------------------------------------------------------


def export_weights(
    source: str | Path, out: str | Path, *, client: int | None = None
) -> tuple[Path, dict]:
    """One model's parts from a run folder's weights file, as a stand-alone weights file.

    ``client``: whose weights when the clients differ (local pretraining); required then.
    """
    clients, meta = read_weights(source)
    if meta["clients"] != "shared" and client is None:
        raise WeightsError(
            source,
            f"the {meta['num_clients']} clients hold different weights "
            f"(pretraining setting {meta.get('setting')!r}); choose one with --client 0..."
            f"{meta['num_clients'] - 1}",
        )
    chosen = 0 if client is None else client
    if not 0 <= chosen < meta["num_clients"]:
        raise WeightsError(
            source, f"--client {chosen}: the file has clients 0..{meta['num_clients'] - 1}"
        )
    exported = {
        key: value
        for key, value in meta.items()
        if key not in ("parts", "clients", "num_clients", "kind")
    }
    exported.update(kind="export", source_kind=meta["kind"], client=chosen)
    return save_weights(out, [clients[chosen]], exported), exported


def load_pretrained(
    path: str | Path, *, part: str = "unet", out_channels: int | None = None, device: str = "cpu"
) -> nn.Module:
    """The model of a bench weights file, ready for fine-tuning with plain PyTorch/MONAI.

    ``part="unet"``: the whole U-Net (``forward(x) -> logits``, ``out_channels`` classes
    including background; default: the file's when it holds a head, else 4 as ACDC) with
    the file's parts loaded, the rest freshly initialised (seed with torch.manual_seed);
    ``part="encoder"``: only its encoder (``forward(x) -> feature maps, finest first``).
    Raises WeightsError when the file is not bench's, changed, or does not fit.
    """
    from bench.backbone import build_unet

    if part not in ("unet", "encoder"):
        raise ValueError(f"part={part!r}; expected 'unet' or 'encoder'")
    clients, meta = read_weights(path)
    if meta["clients"] != "shared":
        raise WeightsError(
            path, "holds one model per client; export one with bench export --client"
        )
    model_config = {key: value for key, value in meta["model"].items() if key != "in_channels"}
    if out_channels is None:
        out_channels = meta.get("out_channels", 4)
    unet = build_unet(model_config, out_channels=out_channels)
    parts = clients[0]
    if part == "encoder" and "encoder" not in parts:
        raise WeightsError(path, f"holds no encoder (parts: {sorted(parts)})")
    check_parts(path, parts, unet, sorted(parts))
    for name, state in parts.items():
        getattr(unet, name).load_state_dict(state)
    module = unet.encoder if part == "encoder" else unet
    return module.to(device)


# -- helpers ------------------------------------------------------------------------


def _flatten(parts: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": tensor.detach().cpu().contiguous()
        for name, state in parts.items()
        for key, tensor in state.items()
    }


def _unflatten(tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    parts: dict[str, dict] = {}
    for key, tensor in tensors.items():
        name, rest = key.split(".", 1)
        parts.setdefault(name, {})[rest] = tensor
    return parts


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _header_metadata(blob: bytes) -> dict:
    """The ``__metadata__`` of a safetensors header (string -> string)."""
    size = int.from_bytes(blob[:8], "little")
    if size > len(blob) - 8:
        raise ValueError("header length beyond the end of the file")
    header = json.loads(blob[8 : 8 + size])
    return header.get("__metadata__") or {}
