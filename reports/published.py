"""Published numbers and which measured experiment each one may stand beside.

FCL's tables (Wu et al., MICCAI 2021) follow the protocol of the ``paper``
preset: Table 1 is ACDC with local fine-tuning, Table 2 ACDC with federated
fine-tuning, and the talk's transfer table ACDC → HVSMR 2016 (fine-tuning mode
not stated, so it stands beside both modes). Chaitanya et al. (NeurIPS 2020)
use another protocol (a fixed 20-patient test set), so their numbers are only
ever shown alone.
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


def matching_table(experiment: Experiment) -> str | None:
    """The FCL table whose protocol the experiment follows, or None."""
    if experiment.preset != PAPER_PRESET:
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
