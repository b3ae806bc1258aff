"""The tasks of a run: builds pretraining and fine-tuning tasks from the config and the data.

The runner asks a ``TaskFactory`` for its tasks; a job file names ``build_task``
(``FACTORY``) so that a ClientApp in another process (a Ray worker, a SuperNode)
builds the same task from the same spec. This layer sits between the runner and
the engine: it imports the engine's task classes, never the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.config import Config, as_section
from bench.data import DataBundle, prepare_data, site_data
from bench.datasets.errors import DataError
from bench.datasets.splits import Split
from bench.finetune import FinetuneTask
from bench.methods.base import PretrainMethod
from bench.pretrain import PretrainTask
from bench.registry import get_method
from bench.weights import pretrained_path, read_pretrained

FACTORY = "bench.task_factory:build_task"


@dataclass(frozen=True)
class Unit:
    """One fine-tuning and evaluation unit of a run."""

    method: str
    seed: int
    mode: str
    n: int
    fold: int

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "seed": self.seed,
            "mode": self.mode,
            "n": self.n,
            "fold": self.fold,
        }


class TaskFactory:
    """``site``: a job's ``site`` record when the task is built at a federation's site
    (``bench.federated.site``): the site's data folder and partition, and the run's split
    and federation manifest, which the site checks its folder against."""

    def __init__(
        self, config: Config, run_dir: Path, *, progress: bool = True, site: dict | None = None
    ):
        config = as_section(Config, config)
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.site = site
        self._bundle: DataBundle | None = None

    @property
    def bundle(self) -> DataBundle:
        if self._bundle is None:
            if self.site is not None:
                from bench.datasets.manifest import FederationManifest

                self._bundle = site_data(
                    self.config,
                    Path(self.site["data"]),
                    int(self.site["partition"]),
                    Split.from_dict(self.site["split"]),
                    FederationManifest.from_dict(self.site["manifest"], Path("manifest")),
                )
            else:
                self._bundle = prepare_data(self.config, self.run_dir, progress=self.progress)
        return self._bundle

    @property
    def num_clients(self) -> int:
        """The split's number of clients (the one place it is derived)."""
        return len(self.bundle.split.clients)

    def job_spec(self, kind: str, **fields) -> dict:
        return {
            "factory": FACTORY,
            "kind": kind,
            "config": self.config,
            "run_dir": str(self.run_dir),
            **fields,
        }

    def pretrained_path(self, method: str, seed: int) -> Path:
        return pretrained_path(self.run_dir, method, seed)

    def saved_parts(self, method_cls: type[PretrainMethod], seed: int) -> list[dict] | None:
        """Per client, the U-Net parts fine-tuning starts from, when no pretraining is needed.

        Empty parts for a method that does not pretrain, another run's parts with
        ``pretrain.from_run``, this run's saved parts; None when pretraining must run.
        """
        if not method_cls.needs_pretraining:
            return [{} for _ in range(self.num_clients)]
        source = self.config.pretrain.from_run
        if source is not None:
            return self.transferred_parts(Path(source), method_cls, seed)
        path = self.pretrained_path(method_cls.name, seed)
        return self.read_pretrained(path, method_cls) if path.exists() else None

    def transferred_parts(
        self, source: Path, method_cls: type[PretrainMethod], seed: int
    ) -> list[dict]:
        """Pretrained parts from another run; client i takes source client i mod K."""
        path = pretrained_path(source, method_cls.name, seed)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: pretrain.from_run has no pretrained {method_cls.name} (seed {seed}); "
                "run it there first"
            )
        parts = self.read_pretrained(path, method_cls)
        return [parts[i % len(parts)] for i in range(self.num_clients)]

    def read_pretrained(self, path: Path, method_cls: type[PretrainMethod]) -> list[dict]:
        """A pretrained file's per-client parts, checked against this run's U-Net."""
        from bench.backbone import build_unet

        model = build_unet(self.config.model, out_channels=1)
        return read_pretrained(path, model, method_cls.pretrained_parts)

    def pretrain_dataset(self) -> str:
        source = self.config.pretrain.from_run
        if source is None:
            return self.bundle.layout
        path = Path(source) / "run.yaml"
        try:
            return str(yaml.safe_load(path.read_text())["dataset"])
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            raise DataError(path, "pretrain.from_run: unreadable run.yaml (no 'dataset')") from None

    def pretrain_task(self, method_cls: type[PretrainMethod], seed: int) -> PretrainTask:
        method = method_cls.name
        return PretrainTask(
            config=self.config,
            method=method_cls,
            seed=seed,
            work_dir=self.run_dir / "work" / "pretrain" / f"{method}-seed{seed}",
            client_volumes=self.bundle.pretrain_volumes(self.config.pretrain.setting),
            spec=self.job_spec("pretrain", method=method, seed=seed),
            show_progress=self.progress,
        )

    def finetune_task(self, unit: Unit, init_parts: list[dict]) -> FinetuneTask:
        bundle = self.bundle
        clients = bundle.split.clients
        k = range(len(clients))
        return FinetuneTask(
            config=self.config,
            mode=unit.mode,
            seed=unit.seed,
            work_dir=self.run_dir
            / "work"
            / "finetune"
            / f"{unit.method}-seed{unit.seed}-{unit.mode}-N{unit.n}-fold{unit.fold}",
            labeled=[
                bundle.client_labeled(i, clients[i].labeled_patients(unit.n, unit.fold)) for i in k
            ],
            validation=[
                bundle.client_labeled(i, clients[i].val_patients(unit.n, unit.fold)) for i in k
            ],
            test=[bundle.client_labeled(i, clients[i].test_patients(unit.fold)) for i in k],
            validation_patients=[len(c.val_patients(unit.n, unit.fold)) for c in clients],
            num_classes=bundle.num_classes,
            class_names=bundle.class_names,
            init_parts=init_parts,
            spec=self.job_spec("finetune", **unit.as_dict()),
        )


def build_task(spec: dict):
    """The task a job file describes (its ``factory``), built in any process; at a site
    (``spec["site"]``) from the site's own data, in the site's run folder."""
    site = spec.get("site")
    run_dir = Path(site["run_dir"] if site else spec["run_dir"])
    factory = TaskFactory(spec["config"], run_dir, progress=False, site=site)
    method_cls = get_method(spec["method"])
    if spec["kind"] == "pretrain":
        return factory.pretrain_task(method_cls, spec["seed"])
    if spec["kind"] == "finetune":
        unit = Unit(spec["method"], spec["seed"], spec["mode"], spec["n"], spec["fold"])
        if site is not None:
            # The run's pretrained parts are on the coordinator: they come with the server's
            # initial model (the coordinator checks that every client starts from the same).
            return factory.finetune_task(unit, None)
        parts = factory.saved_parts(method_cls, unit.seed)
        if parts is None:
            raise FileNotFoundError(
                f"{factory.pretrained_path(unit.method, unit.seed)}: the pretrained parts this "
                "fine-tuning job starts from are missing (the runner writes them first)"
            )
        return factory.finetune_task(unit, parts)
    raise ValueError(f"job file: unknown task kind {spec['kind']!r}")
