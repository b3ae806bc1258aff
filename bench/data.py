"""The data a run uses: records, preprocessed volumes and the split, per client."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import ConfigError, as_section
from bench.config_schema import Config, DataConfig, SplitConfig, SyntheticConfig
from bench.datasets import phantom_cine
from bench.datasets.errors import DataError
from bench.datasets.layout import read_dataset
from bench.datasets.preprocess import PreprocessSettings, load_volumes
from bench.datasets.split_checks import verify_split
from bench.datasets.splits import Split, make_split
from bench.datasets.synthetic import EASY_VERSION, write_synthetic

CLASS_NAMES = {"acdc": ("RV", "Myo", "LV"), "hvsmr": ("Myocardium", "BloodPool")}


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "bench"))


def preprocessed_dir() -> Path:
    return cache_dir() / "preprocessed"


def preprocess(
    data_cfg: dict, layout: str, records, *, progress: bool = True, workers: int | None = None
) -> dict:
    """Preprocessed volumes per patient id under the config's ``data`` settings, read from the
    cache and computed where missing (ACDC: the configured phases; HVSMR: its one volume)."""
    data_cfg = as_section(DataConfig, data_cfg)
    phases = tuple(data_cfg.phases) if layout == "acdc" else ("volume",)
    return load_volumes(
        records,
        PreprocessSettings(**data_cfg.preprocess),
        preprocessed_dir(),
        phases=phases,
        include_cine=data_cfg.include_cine,
        progress=progress,
        workers=workers,
    )


def data_source(data_cfg: dict) -> str:
    """Where a run's data come from, as result rows record it: ``folder`` or
    ``synthetic:<phantom>-v<version>`` (docs/FORMATS.md)."""
    data_cfg = as_section(DataConfig, data_cfg)
    if data_cfg.root is not None or data_cfg.get("manifest") is not None:
        return "folder"
    phantom = data_cfg.synthetic.phantom
    version = phantom_cine.VERSION if phantom == "cine" else EASY_VERSION
    return f"synthetic:{phantom}-v{version}"


def check_phantom(synth: dict) -> None:
    synth = as_section(SyntheticConfig, synth)
    if synth.phantom == "cine" and synth.layout != "acdc":
        raise ConfigError("data.synthetic.phantom: 'cine' draws the ACDC layout only")


def data_root(data_cfg: dict, run_dir: Path) -> Path:
    """The configured folder, or synthetic volumes made once inside the run folder."""
    data_cfg = as_section(DataConfig, data_cfg)
    if data_cfg.root is not None:
        return Path(data_cfg.root)
    synth = data_cfg.synthetic
    check_phantom(synth)
    name = synth.layout if synth.phantom == "easy" else f"{synth.layout}-cine"
    folder = run_dir / "data" / f"synthetic-{name}"
    done = folder / ".complete"
    if not done.exists():
        if synth.phantom == "cine":
            phantom_cine.write_cine_phantom(folder, synth.train, synth.test, synth.seed)
        else:
            write_synthetic(
                folder,
                synth.layout,
                synth.train,
                synth.test,
                synth.seed,
                real_sizes=synth.real_sizes,
            )
        done.write_text("ok\n")
    return folder


@dataclass
class DataBundle:
    """The split and the preprocessed volumes of the patients held here: every patient in one
    process, a site's own patients at a site, none at a federation's coordinator."""

    layout: str
    root: Path | None
    volumes: dict  # patient id -> list[Volume]
    split: Split
    clients_here: frozenset[int] | None = None  # clients whose data are here; None: all

    def holds(self, client: int) -> bool:
        return self.clients_here is None or client in self.clients_here

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.layout]

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    def labeled(self, patients) -> list:
        return [v for p in patients for v in self.volumes[p] if v.label is not None]

    def images(self, patients) -> list[np.ndarray]:
        return [v.image for p in patients for v in self.volumes[p]]

    def pretrain_volumes(self, setting: str) -> list[list[np.ndarray] | None]:
        """Per client its pretraining images, None for a client whose data are elsewhere."""
        per_client = [
            self.images(client.pretrain) if self.holds(client.client) else None
            for client in self.split.clients
        ]
        if setting == "centralized":
            if not self.holds_all:
                raise DataError(
                    self.root or Path("."),
                    "pretrain.setting centralized pools every site's images in one place; "
                    "a federation of sites cannot run it",
                )
            return [[image for client in per_client for image in client]]
        return per_client

    @property
    def holds_all(self) -> bool:
        return self.clients_here is None

    def client_labeled(self, client: int, patients) -> list | None:
        """The client's labeled volumes of ``patients``, None when its data are elsewhere."""
        return self.labeled(patients) if self.holds(client) else None


def coordinator_data(config: dict, run_dir: Path) -> DataBundle:
    """A federation's coordinator: the split made from (or checked against) the federation
    manifest (``data.manifest``), no image read."""
    from bench.datasets.manifest import FederationManifest, manifest_records

    config = as_section(Config, config)
    manifest_path = Path(config.data.manifest)
    manifest = FederationManifest.load(manifest_path)
    records = manifest_records(manifest)
    split_path = Path(run_dir) / "split.json"
    if split_path.exists():
        split = Split.load(split_path)
        if split.params.get("manifest") != manifest.hash:
            raise DataError(
                split_path,
                f"split made from manifest {split.params.get('manifest')}, not from "
                f"{manifest_path} ({manifest.hash})",
            )
        check_split_matches_data(split, records, split_path, manifest_path)
    else:
        split = _make_split(records, config.split, manifest=manifest.hash)
    _verify(split, records, split_path, config.split)
    if not split_path.exists():
        split.save(split_path)
    return DataBundle(manifest.layout, None, {}, split, clients_here=frozenset())


def site_data(
    config: dict, root: Path, partition: int, split: Split, manifest, *, progress: bool = False
) -> DataBundle:
    """A site's own data: refused unless the folder still holds exactly the patients of its
    part of the manifest, unchanged, and the split (made from that manifest) names only
    patients it holds for this client; then only those patients are preprocessed (cached
    at the site, under its BENCH_CACHE_DIR)."""
    from bench.datasets.manifest import check_site_folder

    root = Path(root)
    if split.params.get("manifest") != manifest.hash:
        raise DataError(root, "the run's split was not made from the run's federation manifest")
    if not 0 <= partition < len(manifest.sites) or partition >= split.n_clients:
        raise DataError(root, f"partition {partition} is not a site of this federation")
    records = check_site_folder(root, manifest.part(partition))
    check_split_matches_data(split, records, root / "split.json", root, clients=[partition])
    data_cfg = as_section(Config, config).data
    volumes = preprocess(data_cfg, manifest.layout, records, progress=progress)
    return DataBundle(manifest.layout, root, volumes, split, clients_here=frozenset({partition}))


def _make_split(records, split_cfg: SplitConfig, **extra) -> Split:
    return make_split(
        records,
        protocol=split_cfg.protocol,
        clients=split_cfg.clients,
        scheme=split_cfg.scheme,
        alpha=split_cfg.alpha,
        n_values=tuple(split_cfg.n_values),
        folds=split_cfg.folds,
        val_per_client=split_cfg.val_per_client,
        test=split_cfg.test,
        test_fraction=split_cfg.test_fraction,
        seed=split_cfg.seed,
        **extra,
    )


def _verify(split: Split, records, split_path: Path, split_cfg: SplitConfig) -> None:
    verify_split(
        split,
        [r.patient_id for r in records],
        split_path,
        n_values=split_cfg.n_values,
        # The leave-one-out fallback has its own fold count (docs/PROTOCOL.md).
        folds=split.folds if split.params.get("test_mode") == "leave_one_out" else split_cfg.folds,
    )


def prepare_data(config: dict, run_dir: Path, progress: bool = True) -> DataBundle:
    """Records, then the split (made or read, and checked), then the preprocessed volumes:
    a split that cannot be made or does not check fails before any preprocessing."""
    config = as_section(Config, config)
    if config.data.get("manifest") is not None:
        return coordinator_data(config, run_dir)
    data_cfg, split_cfg = config.data, config.split
    root = data_root(data_cfg, Path(run_dir))
    layout, records = read_dataset(root)
    split_path = Path(run_dir) / "split.json"
    if split_path.exists():
        split = Split.load(split_path)
        check_split_matches_data(split, records, split_path, root)
    else:
        split = _make_split(records, split_cfg)
    _verify(split, records, split_path, split_cfg)
    if not split_path.exists():
        split.save(split_path)
    volumes = preprocess(data_cfg, layout, records, progress=progress)
    return DataBundle(layout=layout, root=root, volumes=volumes, split=split)


def check_split_matches_data(
    split: Split, records, split_path: Path, root: Path, clients=None
) -> None:
    """A split file (``--split``, or one kept in the run folder) names patients of this dataset
    (of ``clients`` only, when given: a site checks its own)."""
    by_id = {r.patient_id: r for r in records}
    layouts = split.params.get("layouts")
    present = sorted({r.layout for r in records})
    if layouts is not None and sorted(layouts) != present:
        raise DataError(
            split_path,
            f"split made for {', '.join(layouts)} data, but {root} holds {', '.join(present)}",
        )
    for client in split.clients:
        if clients is not None and client.client not in clients:
            continue
        named = {
            "pretrain": client.pretrain,
            "val": [p for folds in client.val.values() for ids in folds for p in ids],
            "test": client.all_test_patients(),
            "labeled": [p for folds in client.labeled.values() for ids in folds for p in ids],
        }
        for role, patients in named.items():
            missing = [p for p in patients if p not in by_id]
            if missing:
                raise DataError(
                    split_path,
                    f"client {client.client} {role} patient {missing[0]!r} is not in {root}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                )
        used = named["test"] + named["val"] + named["labeled"]
        unlabeled = [p for p in used if not by_id[p].labeled]
        if unlabeled:
            raise DataError(
                split_path,
                f"client {client.client}: patient {unlabeled[0]!r} is used with labels "
                f"(test, validation or labeled subset) but has no ground truth in {root}",
            )
