"""Atomic writes: a file is either absent or complete, never half-written."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | Path, obj) -> None:
    import torch  # imported here: the data workers use this module without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON file holding one object; DataError naming the file and ``what`` it should be
    when it is unreadable or holds something else."""
    import json

    from bench.datasets.errors import DataError

    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable {what} ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise DataError(path, f"{what} is not a JSON object")
    return document


def torch_load(path: str | Path):
    """A tensor file's content, unpickled with ``weights_only=True``: tensors, dicts, lists
    and plain values only. A file holding anything else (a crafted pickle) is refused
    before any of its code can run: DataError naming the file."""
    import pickle

    import torch

    from bench.datasets.errors import DataError

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            path,
            "holds Python objects, not only tensors and plain values; refusing to unpickle it "
            "(a crafted file, or one written by an older bench: delete it or start a new run "
            f"folder) [{' '.join(str(exc).split())[:160]}]",
        ) from None
    except FileNotFoundError:
        raise DataError(path, "tensor file not found") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(
            path, f"unreadable tensor file (truncated or corrupt?): {type(exc).__name__}"
        ) from None
