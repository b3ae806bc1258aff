"""A benchmark run: pretrain each method, fine-tune for each mode, N and fold, evaluate.

Every unit of work writes its result rows atomically, so rerunning the same
command skips what is done and resumes what was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from bench.config import Config, ConfigError, as_section, config_hash
from bench.curves import record_finetuning, record_pretraining
from bench.data import DataBundle, data_source
from bench.datasets.errors import DataError
from bench.federated.engine import run_task
from bench.io import atomic_write_text
from bench.provenance import code_version, hardware, library_versions
from bench.registry import get_method
from bench.results import ResultStore
from bench.runfolder import (
    RunFolderLock,
    check_out_path,
    clear_for_fresh,
    write_marker,
)
from bench.task_factory import TaskFactory, Unit
from bench.trackers import check_tracker
from bench.weights import describe, finetuned_path, save_weights


def read_saved_config(path: Path) -> dict:
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(path, f"unreadable saved config ({type(exc).__name__})") from None
    if not isinstance(saved, dict):
        raise DataError(path, "saved config is not a mapping of options")
    return saved


def open_run_dir(run_dir: Path, config: dict, fresh: bool) -> RunFolderLock:
    """Makes or reopens a run folder and locks it for this process.

    Called once the config and the CLI arguments validated: ``--fresh`` deletes only a
    folder bench made, and only when no other run holds it. A run folder holds one
    config: resuming with another would mix results.
    """
    run_dir = Path(run_dir)
    check_out_path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_marker(run_dir)
    except OSError as exc:
        raise DataError(run_dir, f"--out cannot be written ({exc.strerror or exc})") from None
    lock = RunFolderLock(run_dir).acquire()
    try:
        if fresh:
            clear_for_fresh(run_dir)
        saved = run_dir / "config.yaml"
        if saved.exists():
            previous = read_saved_config(saved)
            if config_hash(previous) != config_hash(config):
                raise ConfigError(
                    f"{saved}: this run folder was made with another configuration "
                    f"(config hash {config_hash(previous)}, now {config_hash(config)}); "
                    "use --fresh to start over or --out for a new folder"
                )
    except BaseException:
        lock.release()
        raise
    return lock


def adopt_split_file(run_dir: Path, split_file: Path) -> None:
    """``--split``: the file becomes ``<run>/split.json``, which decides the split; a run
    folder that already has another split is an error (call under the folder's lock)."""
    from bench.datasets.splits import Split

    split = Split.load(split_file)
    target = run_dir / "split.json"
    if target.exists():
        existing = Split.load(target)
        if existing.hash != split.hash:
            raise ConfigError(
                f"--split {split_file}: the run folder {run_dir} already uses split "
                f"{existing.hash}, not this file's {split.hash}; use --fresh or another --out"
            )
    split.save(target)
    atomic_write_text(
        run_dir / "split_source.json",
        json.dumps({"file": str(split_file.resolve()), "hash": split.hash}, indent=1) + "\n",
    )


PROGRESS_MODES = ("bar", "lines", "none")


class Runner:
    """Runs the units of one run folder.

    ``progress``: ``"bar"`` (progress bars, for a terminal), ``"lines"`` (one plain line per
    step on stderr, for logs), ``"none"``; ``True``/``False`` mean ``"bar"``/``"none"``.
    ``bench.api.open_run`` makes one after the run-folder checks and under the folder's lock.
    """

    def __init__(self, config: Config, run_dir: Path, *, progress: bool | str = True):
        if isinstance(progress, bool):
            progress = "bar" if progress else "none"
        if progress not in PROGRESS_MODES:
            raise ValueError(f"progress={progress!r}; expected one of {PROGRESS_MODES}")
        config = as_section(Config, config)
        self.config, self.run_dir, self.progress_mode = config, Path(run_dir), progress
        self.progress = progress == "bar"
        self.store = ResultStore(self.run_dir)
        self.tasks = TaskFactory(config, self.run_dir, progress=self.progress)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)

    @property
    def bundle(self) -> DataBundle:
        return self.tasks.bundle

    def units(self, methods: list[str]) -> list[Unit]:
        cfg = self.config
        return [
            Unit(method, seed, mode, n, fold)
            for seed in cfg.run.seeds
            for method in methods
            for mode in cfg.finetune.modes
            for n in cfg.split.n_values
            # The split's fold count: the leave-one-out fallback may differ from split.folds.
            for fold in range(self.bundle.split.folds)
        ]

    # -- pretraining ----------------------------------------------------
    def pretrain(self, method: str, seed: int) -> list[dict]:
        """Per client, the U-Net parts to start fine-tuning from (empty for random init)."""
        method_cls = get_method(method)
        parts = self.tasks.saved_parts(method_cls, seed)
        if parts is not None:
            return parts
        task = self.tasks.pretrain_task(method_cls, seed)
        final = run_task(task, self.config.run)
        parts = task.pretrained_parts(final)
        if self.config.pretrain.setting == "centralized":
            parts = parts * self.tasks.num_clients
        self.write_loss_history(method, seed, final["history"])
        record_pretraining(self.run_dir, self.config, task, final)
        meta = describe(
            "pretrained",
            method=method,
            config=self.config,
            split_hash=self.bundle.split.hash,
            dataset=self.bundle.layout,
            seed=seed,
            setting=self.config.pretrain.setting,
        )
        save_weights(self.tasks.pretrained_path(method, seed), parts, meta)
        return parts

    def write_loss_history(self, method: str, seed: int, history: list[dict]) -> None:
        """pretrain_loss/<method>-seed<s>.csv: one row per (round, client), the loss and whatever
        else the round recorded (a loss's terms, bank fill; docs/FORMATS.md), and bytes sent."""
        records = [
            {
                "method": method,
                "seed": seed,
                "round": entry["round"],
                "client": client,
                **{k: v for k, v in metrics.items() if k != "num-examples"},  # Flower's own
                **{
                    f"bytes_{kind}": size
                    for kind, size in entry.get("bytes_up", {}).get(client, {}).items()
                },
            }
            for entry in history
            for client, metrics in sorted(entry["train"].items())
        ]
        frame = pd.DataFrame(records)
        first = ["method", "seed", "round", "client", "loss_first", "loss_last", "loss_mean"]
        frame = frame[first + sorted(c for c in frame.columns if c not in first)]
        atomic_write_text(
            self.run_dir / "pretrain_loss" / f"{method}-seed{seed}.csv",
            frame.to_csv(index=False, float_format="%.6g"),
        )

    # -- fine-tuning and evaluation -------------------------------------
    def finetune(self, unit: Unit, init_parts: list[dict]) -> list[dict]:
        task = self.tasks.finetune_task(unit, init_parts)
        final = run_task(task, self.config.run)
        models = task.selected_models(final)
        outcome = task.convergence(final)
        record_finetuning(self.run_dir, self.config, unit, task, final, outcome)
        if unit.fold == 0:
            # One fine-tuned model per (method, mode, N) for the report's qualitative figure.
            self.save_finetuned(unit, models[0])
        rows = self.evaluate(unit, final, outcome)
        shutil.rmtree(task.work_dir, ignore_errors=True)
        return rows

    def save_finetuned(self, unit: Unit, state: dict) -> None:
        """Client 0's fine-tuned U-Net (encoder, decoder and head) as a weights file."""
        parts: dict[str, dict] = {}
        for key, tensor in state.items():
            part, rest = key.split(".", 1)
            parts.setdefault(part, {})[rest] = tensor
        meta = describe(
            "finetuned",
            method=unit.method,
            config=self.config,
            split_hash=self.bundle.split.hash,
            dataset=self.bundle.layout,
            seed=unit.seed,
            mode=unit.mode,
            n_labeled=unit.n,
            fold=unit.fold,
            client=0,
            out_channels=self.bundle.num_classes,
            class_names=list(self.bundle.class_names),
        )
        path = finetuned_path(self.run_dir, unit.method, unit.seed, unit.mode, unit.n)
        save_weights(path, [parts], meta)

    def evaluate(self, unit: Unit, final: dict, convergence: list[dict]) -> list[dict]:
        """Result rows of each client's chosen model on its test volumes, from the scores the
        clients computed where their test patients are (``FinetuneTask.client_outcome``)."""
        bundle = self.bundle
        metadata = {
            "method": unit.method,
            "pretrain_setting": self.config.pretrain.setting,
            "pretrain_dataset": self.tasks.pretrain_dataset(),
            "finetune_mode": unit.mode,
            "dataset": bundle.layout,
            "data_source": data_source(self.config.data),
            "n_labeled": unit.n,
            "fold": unit.fold,
            "seed": unit.seed,
            "split_hash": bundle.split.hash,
            "protocol": bundle.split.protocol,
            "config_hash": config_hash(self.config),
            "preset": self.config.preset,
            "code_version": code_version(),
            "versions": library_versions(),
        }
        rows = []
        for client, outcome in enumerate(final["clients"]):
            for score in outcome["info"]["scores"]:
                rows.append(
                    {
                        **metadata,
                        "client": client,
                        **score,
                        "converged": convergence[client]["converged"],
                        "chosen_round": convergence[client]["chosen_round"],
                        "stopped_by": convergence[client]["stopped_by"],
                    }
                )
        return rows

    @contextlib.contextmanager
    def timed(self, phase: str, **fields):
        """Appends the duration of a step to <run>/timings.jsonl (provenance, not results)."""
        start = time.perf_counter()
        yield
        record = {"phase": phase, **fields, "seconds": round(time.perf_counter() - start, 3)}
        with open(self.run_dir / "timings.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")

    # -- the whole run --------------------------------------------------
    def units_to_compute(self, methods: list[str]) -> list[Unit]:
        """Units without a verified result file; those whose file does not verify are named."""
        hashes = {"config_hash": config_hash(self.config), "split_hash": self.bundle.split.hash}
        todo = []
        for unit in self.units(methods):
            finished, why = self.store.status(unit.as_dict(), **hashes)
            if why is not None:
                path = self.store.unit_path(unit.as_dict())
                print(f"bench: recomputing {path}: {why}", file=sys.stderr)
            if not finished:
                todo.append(unit)
        return todo

    def run(self, methods: list[str]) -> None:
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=True))
        run_info = {
            "dataset": self.bundle.layout,
            "split_hash": self.bundle.split.hash,
            "methods": methods,
            "hardware": hardware(),
        }
        atomic_write_text(self.run_dir / "run.yaml", yaml.safe_dump(run_info))
        check_tracker(self.config.run, self.run_dir)
        units = self.units_to_compute(methods)
        bar = tqdm(
            total=len(units), desc="fine-tune + evaluate", unit="unit", disable=not self.progress
        )
        parts_cache: dict[tuple[str, int], list[dict]] = {}
        self.log(f"{len(units)} unit(s) to run in {self.run_dir}")
        for index, unit in enumerate(units, 1):
            key = (unit.method, unit.seed)
            if key not in parts_cache:
                bar.set_postfix_str(f"pretraining {unit.method} (seed {unit.seed})")
                self.log(f"pretraining {unit.method} (seed {unit.seed})")
                with self.timed("pretrain", method=unit.method, seed=unit.seed):
                    parts_cache[key] = self.pretrain(unit.method, unit.seed)
            label = f"{unit.method} {unit.mode} N={unit.n} fold {unit.fold} seed {unit.seed}"
            bar.set_postfix_str(label)
            start = time.perf_counter()
            with self.timed("finetune", **unit.as_dict()):
                rows = self.finetune(unit, parts_cache[key])
            self.store.write(unit.as_dict(), rows)
            bar.update()
            seconds = time.perf_counter() - start
            self.log(f"unit {index}/{len(units)} done: {label} ({seconds:.1f} s)")
        bar.close()

    def log(self, message: str) -> None:
        """A plain progress line (``progress="lines"``): readable in a redirected log."""
        if self.progress_mode == "lines":
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
