"""Experiments and Dice scores at the volume, (client, fold) and client levels.

A cell of the FCL-style tables is the mean ± std across clients, where each
client's Dice is its mean over folds; within a (client, fold) the Dice is the
mean over its test volumes (patients x frames; over seeds too when a run has
several) of the mean over the foreground classes present (classes absent from
a volume's label are NaN and skipped). Per-class scores skip the class mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

EXPERIMENT_COLUMNS = ["dataset", "pretrain_dataset", "finetune_mode", "preset", "split_hash"]
BASELINE = "random"
DATASET_NAMES = {"acdc": "ACDC", "hvsmr": "HVSMR 2016"}
MODE_ORDER = {"local": 0, "federated": 1}


def safe_slug(text: str) -> str:
    """``text`` reduced to letters, digits, '.', '_' and '-' (no path separators, quotes or
    markup): safe as a file name and inside an HTML attribute."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug or "unnamed"


@dataclass(frozen=True)
class Experiment:
    dataset: str
    pretrain_dataset: str
    mode: str
    preset: str
    split_hash: str

    @property
    def transfer(self) -> bool:
        return self.dataset != self.pretrain_dataset

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Experiments of one run configuration: the same but for the fine-tuning mode."""
        return self.dataset, self.pretrain_dataset, self.preset, self.split_hash

    @property
    def n_symbol(self) -> str:
        return "M" if self.transfer else "N"

    @property
    def slug(self) -> str:
        """Names files and HTML ids: run data (a preset, a hash) reduced to [A-Za-z0-9._-]."""
        source = f"-from-{self.pretrain_dataset}" if self.transfer else ""
        return safe_slug(f"{self.dataset}{source}-{self.mode}-{self.preset}-{self.split_hash[:8]}")

    @property
    def title(self) -> str:
        name = DATASET_NAMES.get(self.dataset, self.dataset)
        if self.transfer:
            source = DATASET_NAMES.get(self.pretrain_dataset, self.pretrain_dataset)
            return f"Transfer {source} → {name}, {self.mode} fine-tuning"
        return f"{name}, {self.mode} fine-tuning"

    @property
    def detail(self) -> str:
        return f"preset {self.preset}, split {self.split_hash[:8]}"

    def sort_key(self):
        return (
            self.transfer,
            self.dataset,
            MODE_ORDER.get(self.mode, 9),
            self.mode,
            self.preset,
            self.split_hash,
        )


@dataclass(frozen=True)
class Planned:
    """What a run folder's configuration asks for, so that unfinished work shows as missing."""

    dataset: str
    pretrain_dataset: str
    preset: str
    split_hash: str
    modes: tuple[str, ...] = ()
    n_values: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()

    @property
    def group(self) -> tuple[str, str, str, str]:
        return self.dataset, self.pretrain_dataset, self.preset, self.split_hash

    def experiments(self) -> list[Experiment]:
        return [Experiment(*self.group[:2], mode, *self.group[2:]) for mode in self.modes]


def experiments(rows: pd.DataFrame, planned=()) -> list[Experiment]:
    keys = rows[EXPERIMENT_COLUMNS].drop_duplicates().itertuples(index=False, name=None)
    found = {Experiment(*key) for key in keys} | {e for plan in planned for e in plan.experiments()}
    return sorted(found, key=Experiment.sort_key)


def label_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Adds ``experiment`` (its slug) and ``variant``: the method, qualified when one
    experiment holds it from several pretraining settings or configurations."""
    rows = rows.copy()
    rows["experiment"] = [
        Experiment(*key).slug for key in rows[EXPERIMENT_COLUMNS].itertuples(index=False, name=None)
    ]
    keys = ["experiment", "method"]
    settings = rows.groupby(keys)["pretrain_setting"].transform("nunique")
    configs = rows.groupby([*keys, "pretrain_setting"])["config_hash"].transform("nunique")
    variant = rows["method"].where(
        settings <= 1, rows["method"] + " [" + rows["pretrain_setting"] + "]"
    )
    rows["variant"] = variant.where(
        configs <= 1, variant + " [cfg " + rows["config_hash"].str[:8] + "]"
    )
    return rows


def method_order(variants) -> list[str]:
    """Random init first, then alphabetical."""
    return sorted(
        set(variants), key=lambda v: (not v.startswith(BASELINE + " ") and v != BASELINE, v)
    )


def pair_scores(rows: pd.DataFrame, by_class: bool = False) -> pd.DataFrame:
    """Dice per (experiment, variant, n_labeled[, class_name], client, fold)."""
    base = ["experiment", "variant", "n_labeled", *(["class_name"] if by_class else [])]
    volume = [*base, "seed", "client", "fold", "patient", "phase"]
    per_volume = rows.groupby(volume, as_index=False)["dice"].mean()  # over classes (NaN skipped)
    per_volume = per_volume.dropna(subset=["dice"])
    return per_volume.groupby([*base, "client", "fold"], as_index=False)["dice"].mean()


def client_scores(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each client's Dice: its mean over folds."""
    keys = [c for c in pairs.columns if c not in ("fold", "dice")]
    return pairs.groupby(keys, as_index=False)["dice"].mean()


def summarise(clients: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 1) across clients, with the numbers of clients and (client, fold)
    pairs."""
    keys = [c for c in clients.columns if c not in ("client", "dice")]
    table = clients.groupby(keys)["dice"].agg(mean="mean", std="std", n_clients="count")
    table["n_pairs"] = pairs.groupby(keys)["dice"].count()
    return table.reset_index()
