"""Published numbers and which measured experiment each one may stand beside.

FCL's tables (Wu et al., MICCAI 2021): Table 1 is ACDC with local fine-tuning,
Table 2 ACDC with federated fine-tuning, and the talk's transfer table ACDC →
HVSMR 2016 (fine-tuning mode not stated, so it stands beside both modes). They
stand beside a measured experiment whenever its rows were computed on data read
from a real dataset folder (never on synthetic phantoms) and dataset and mode
match (N or M are matched column by column), labelled with both protocols: only
the ``paper`` preset follows theirs (10 clients, 5 folds), the others are not
like-for-like. Chaitanya et al. (NeurIPS 2020) use another protocol (a fixed
20-patient test set), so their numbers are only ever shown alone.
"""

from __future__ import annotations

import io

import pandas as pd

from bench.reports.aggregate import Experiment
from bench.reports.reference_data import CHAITANYA_NEURIPS2020_ACDC_CSV, FCL_MICCAI2021_CSV

WU = "published (Wu et al. 2021)"
CHAITANYA = "published (Chaitanya et al. 2020)"
PAPER_PRESET = "paper"
PAPER_CLIENTS = 10
PAPER_FOLDS = 5
WU_PROTOCOL = (
    f"Wu et al. 2021: ACDC's 100 training patients as {PAPER_CLIENTS} clients of 10, "
    f"{PAPER_FOLDS}-fold cross-validation, mean ± std across clients"
)
# Printed name -> registry name; FedCA has no counterpart here.
METHOD_OF = {
    "Random init": "random",
    "Local CL": "local_cl",
    "FedRotation": "fedrotation",
    "FedSimCLR": "simclr",
    "FedSwAV": "swav",
    "FedCA": None,
    "FCL": "fcl",
}
FCL_TITLES = {
    "table1_local_finetune": "Table 1, ACDC, local fine-tuning",
    "table2_federated_finetune": "Table 2, ACDC, federated fine-tuning",
    "transfer_acdc_to_hvsmr": "transfer ACDC → HVSMR 2016 (fine-tuning mode not stated)",
}


def fcl_numbers() -> pd.DataFrame:
    return pd.read_csv(io.StringIO(FCL_MICCAI2021_CSV))


def chaitanya_numbers() -> pd.DataFrame:
    return pd.read_csv(io.StringIO(CHAITANYA_NEURIPS2020_ACDC_CSV))


def matching_table(experiment: Experiment, real_data: bool) -> str | None:
    """The FCL table the experiment stands beside (same dataset and mode), or None; never for
    results computed on synthetic data."""
    if not real_data:
        return None
    if experiment.dataset == "acdc" and not experiment.transfer:
        return {"local": "table1_local_finetune", "federated": "table2_federated_finetune"}.get(
            experiment.mode
        )
    if experiment.dataset == "hvsmr" and experiment.pretrain_dataset == "acdc":
        return "transfer_acdc_to_hvsmr"
    return None


def fcl_table(name: str) -> pd.DataFrame:
    """Rows of one published table: method (printed), registry method, n, mean, std."""
    frame = fcl_numbers()
    frame = frame[frame["experiment"] == name]
    return pd.DataFrame(
        {
            "printed": frame["method"],
            "method": [METHOD_OF.get(m) for m in frame["method"]],
            "n": frame["labeled_patients"].astype(int),
            "mean": frame["dice_mean"],
            "std": frame["dice_std"],
        }
    ).reset_index(drop=True)


def run_protocol(config: dict | None, preset: str) -> str:
    """A run's protocol in one line: split protocol, clients, folds, resolution and preset."""
    config = config or {}
    split = config.get("split") or {}
    prep = (config.get("data") or {}).get("preprocess") or {}
    parts = [
        f"split protocol {split['protocol']}" if "protocol" in split else None,
        f"{split['clients']} clients" if "clients" in split else None,
        f"{split['folds']}-fold" if "folds" in split else None,
        f"{prep['spacing_mm']} mm in-plane" if "spacing_mm" in prep else None,
        f"{prep['size']}×{prep['size']} px" if "size" in prep else None,
        f"preset {preset}",
    ]
    return ", ".join(p for p in parts if p)


def like_for_like(config: dict | None, preset: str) -> bool:
    split = (config or {}).get("split") or {}
    return (
        preset == PAPER_PRESET
        and split.get("protocol", "fcl") == "fcl"  # Wu et al.'s folds (runs before the key: fcl)
        and split.get("clients", PAPER_CLIENTS) == PAPER_CLIENTS
        and split.get("folds", PAPER_FOLDS) == PAPER_FOLDS
    )


def published_mean(name: str, method: str, n: int) -> tuple[float, float] | None:
    """(mean, std) that Wu et al. 2021 print for a registry method at N (or M), or None."""
    table = fcl_table(name)
    hit = table[(table["method"] == method) & (table["n"] == n)]
    return (float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])) if len(hit) else None
