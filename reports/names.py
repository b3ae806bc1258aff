"""Method display names for tables and figures; the registry id goes in a footnote.

A variant (``aggregate.label_rows``) is a registry id, optionally followed by a
qualifier in brackets (``fcl [centralized]``); the qualifier is kept as is.
"""

from __future__ import annotations

DISPLAY = {
    "fcl": "FCL",
    "local_cl": "Local CL",
    "simclr": "SimCLR",
    "moco": "MoCo v2",
    "byol": "BYOL",
    "barlow_twins": "Barlow Twins",
    "vicreg": "VICReg",
    "swav": "SwAV",
    "pgl": "PGL",
    "gcl": "GCL",
    "fedrotation": "FedRotation",
    "random": "Random init",
}
# GCL's strategies as Chaitanya et al. 2020 write them (G^R, G^D-, G^D; L^R, L^D).
GCL_STRATEGY = {"GR": "G^R", "GD-": "G^D-", "GD": "G^D", "LR": "L^R", "LD": "L^D"}
GCL_DEFAULT = {"global_strategy": "GD", "local_strategy": "LR"}


def gcl_variant(hparams: dict | None) -> str:
    """``G^D + L^R``: GCL's global and local strategies (the method's defaults unless set)."""
    hp = {**GCL_DEFAULT, **(hparams or {})}
    parts = [GCL_STRATEGY.get(str(hp["global_strategy"]), str(hp["global_strategy"]))]
    if hp.get("local_strategy") not in (None, "", "none"):
        parts.append(GCL_STRATEGY.get(str(hp["local_strategy"]), str(hp["local_strategy"])))
    return " + ".join(parts)


def registry_id(variant: str) -> str:
    return str(variant).split(" [")[0]


def display_name(variant: str, gcl_hparams: dict | None = None) -> str:
    """``FCL``, ``GCL (G^D + L^R)``, ``SimCLR [centralized]``; unknown ids are shown as they are."""
    method, _, rest = str(variant).partition(" [")
    name = DISPLAY.get(method, method)
    if method == "gcl":
        name = f"GCL ({gcl_variant(gcl_hparams)})"
    return f"{name} [{rest}" if rest else name


def registry_note(variants) -> str:
    """The footnote that ties display names to registry ids (``--methods`` names)."""
    ids = sorted({registry_id(v) for v in variants}, key=lambda m: DISPLAY.get(m, m).lower())
    pairs = ", ".join(f"{DISPLAY.get(m, m)} = {m}" for m in ids)
    return f"Registry ids (bench run --methods): {pairs}." if ids else ""
