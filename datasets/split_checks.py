"""Checks a split against the dataset and the run before anything trains on it.

No test patient among a fold's labeled or validation patients, no patient on two
clients, test patients in a pretraining pool only where the split's protocol says
so (``params["test_in_pretraining"]``, recorded in the file), every named patient
in the dataset, and a labeled subset for every configured N and fold.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError

# Protocols whose clients pretrain on every patient they hold, test patients included
# (FCL, Wu et al. 2021: pretraining is unsupervised, labels are never seen).
PRETRAIN_ON_TEST_PROTOCOLS = frozenset({"fcl"})


def _roles(client, n: int, fold: int) -> dict[str, list[str]]:
    """Role -> patients for one (N, fold), for splits with or without per-fold roles."""
    if hasattr(client, "roles"):
        return client.roles(n, fold)
    return {
        "pretrain": client.pretrain,
        "labeled": client.labeled_patients(n, fold),
        "val": client.val,
        "test": client.test,
    }


def pretraining_may_hold_test_patients(split) -> bool:
    params = split.params
    if "test_in_pretraining" in params:
        return bool(params["test_in_pretraining"])
    return params.get("protocol") in PRETRAIN_ON_TEST_PROTOCOLS


def verify_split(
    split, patient_ids, path: str | Path, *, n_values=(), folds: int | None = None
) -> None:
    """DataError naming ``path`` and the patient or client at the first problem found."""
    path = Path(path)
    known = set(patient_ids)
    if not split.clients:
        raise DataError(path, "the split has no clients")
    owner: dict[str, int] = {}
    pretrain_on_test = pretraining_may_hold_test_patients(split)
    for client in split.clients:
        k = client.client
        available_n = sorted(client.labeled)
        for n in n_values:
            if int(n) not in client.labeled:
                raise DataError(
                    path, f"client {k} has no labeled subsets for N={n} (it has N {available_n})"
                )
        fold_counts = {len(subsets) for subsets in client.labeled.values()}
        if folds is not None and any(count < folds for count in fold_counts):
            raise DataError(
                path, f"client {k} has {min(fold_counts)} folds; the config asks for {folds}"
            )
        for n in available_n:
            for fold in range(len(client.labeled[n])):
                try:
                    roles = _roles(client, n, fold)
                except (KeyError, IndexError):
                    raise DataError(
                        path, f"client {k} lacks the roles of N={n}, fold {fold}"
                    ) from None
                test = set(roles["test"])
                for role in ("labeled", "val"):
                    leaked = sorted(test & set(roles[role]))
                    if leaked:
                        raise DataError(
                            path,
                            f"test patient {leaked[0]} of client {k} is also in its {role} "
                            f"patients (N={n}, fold {fold}): test leakage",
                        )
                if not pretrain_on_test:
                    leaked = sorted(test & set(roles["pretrain"]))
                    if leaked:
                        raise DataError(
                            path,
                            f"test patient {leaked[0]} of client {k} is in its pretraining pool, "
                            f"which protocol {split.params.get('protocol', 'own')!r} does not "
                            "allow",
                        )
                for role, patients in roles.items():
                    for patient in patients:
                        if patient not in known:
                            raise DataError(
                                path,
                                f"patient {patient!r} ({role} of client {k}) is not in the dataset",
                            )
                        if owner.setdefault(patient, k) != k:
                            raise DataError(
                                path,
                                f"patient {patient} is on two clients ({owner[patient]} and {k})",
                            )
