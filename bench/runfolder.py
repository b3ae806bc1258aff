"""A run folder's identity and exclusive use: the marker that says bench made it, and the lock.

``.bench-run`` (JSON: format version, creation time) marks a folder bench made: only
such a folder is resumed or deleted by ``--fresh``. ``.bench-lock`` holds the PID and
host of the ``bench run`` using the folder; a second run into it fails at once, and a
lock whose process is gone is taken over with a message.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Self

from bench.datasets.errors import DataError

MARKER = ".bench-run"
LOCK = ".bench-lock"
# 2: result units with manifests, tensor files loadable with weights_only=True.
FORMAT = 2
REDO = "start a new run folder with --out (or delete this one yourself) and run again"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out_path(run_dir: Path) -> None:
    """DataError naming ``run_dir`` unless bench can make or resume a run there."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(run_dir, "--out names an existing file, not a folder")
    existing = _nearest_existing(run_dir)
    if not existing.is_dir():
        raise DataError(run_dir, f"--out lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(run_dir, f"--out cannot be written ({existing} is not writable)")
    if existing == run_dir.absolute():
        check_made_by_bench(run_dir, allow_empty=True)


def check_made_by_bench(run_dir: Path, *, allow_empty: bool = False) -> None:
    """DataError unless ``run_dir`` carries bench's marker of the current format."""
    run_dir = Path(run_dir)
    marker = run_dir / MARKER
    if not marker.is_file():
        entries = [p.name for p in run_dir.iterdir()] if run_dir.is_dir() else []
        if allow_empty and not entries:
            return
        if {"config.yaml", "results", "split.json"} & set(entries):
            raise DataError(
                run_dir,
                f"run folder made by an older bench (no {MARKER} marker; its files are not "
                f"verified and may hold pickles); {REDO}",
            )
        raise DataError(
            run_dir,
            f"not a bench run folder (no {MARKER} marker); bench neither writes into nor "
            "deletes a folder it did not make: choose a new or empty folder with --out",
        )
    try:
        info = json.loads(marker.read_text())
        version = int(info["format"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            marker, "unreadable run folder marker (expected JSON with 'format')"
        ) from None
    if version != FORMAT:
        raise DataError(
            run_dir, f"run folder of format {version}; this bench reads format {FORMAT}: {REDO}"
        )


def write_marker(run_dir: Path) -> None:
    from bench.io import atomic_write_text

    marker = Path(run_dir) / MARKER
    if not marker.exists():
        atomic_write_text(marker, json.dumps({"format": FORMAT, "created": time.time()}) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolderLock:
    """Exclusive use of a run folder by this process (a context manager)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
        return True

    def acquire(self) -> RunFolderLock:
        for _ in range(3):  # two processes taking over one stale lock: one wins
            if self._create():
                self.held = True
                return self
            try:
                holder = json.loads(self.path.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                pid, host = None, socket.gethostname()
            if host != socket.gethostname():
                raise DataError(
                    self.path.parent,
                    f"run folder in use by bench run PID {pid} on host {host} "
                    f"(lock file {self.path}); delete the lock only if that run is over",
                )
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise DataError(
                    self.path.parent,
                    f"run folder in use by bench run PID {pid} (lock file {self.path}); "
                    "wait for it to finish or stop it",
                )
            print(
                f"bench: taking over the stale lock of {self.path.parent} (process {pid} is gone)",
                file=sys.stderr,
            )
            self.path.unlink(missing_ok=True)
        raise DataError(self.path.parent, f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> Self:
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def clear_for_fresh(run_dir: Path) -> None:
    """Deletes what a bench run folder holds, keeping its marker and the lock we hold."""
    check_made_by_bench(run_dir)
    for entry in Path(run_dir).iterdir():
        if entry.name in (MARKER, LOCK):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
