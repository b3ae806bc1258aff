"""Client splits: which patients each client pretrains on, validates on, labels and tests on.

A split is a plain JSON document (canonical form: sorted keys, compact); its
``hash`` is the sha256 of that form, so the same records, arguments and seed give
the same split and the same hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.io import atomic_write_text

from .errors import DataError
from .records import PatientRecord

PROTOCOLS = ("own", "fcl", "chaitanya")
SCHEMES = ("iid", "group", "dirichlet")  # and "sites", set by a federation manifest
TEST_MODES = ("auto", "holdout")
# Chaitanya et al. 2020: fixed ACDC test set, 4 patients per group.
CHAITANYA_TEST_IDS = tuple(
    f"patient{i:03d}" for b in range(0, 100, 20) for i in range(b + 7, b + 11)
)


class SplitError(ValueError):
    """The records cannot be split as asked (an empty client, N larger than a pool, ...)."""


@dataclass
class ClientSplit:
    """One client's patients in each role.

    ``pretrain``: the patients whose volumes it pretrains on (unlabeled);
    ``labeled[N][fold]``, ``val[N][fold]``: the N labeled patients of a fold and the
    validation patients that go with them (empty when none is left, e.g. FCL's N = 8);
    ``test[fold]``: the fold's test patients (the same in every fold under ``own`` and
    ``chaitanya``, a different block in each under ``fcl``).
    """

    client: int
    pretrain: list[str]
    labeled: dict[int, list[list[str]]]
    val: dict[int, list[list[str]]]
    test: list[list[str]]

    def labeled_patients(self, n: int, fold: int) -> list[str]:
        """The ``n`` labeled patients of fold ``fold``."""
        try:
            return self.labeled[int(n)][int(fold)]
        except (KeyError, IndexError):
            raise KeyError(
                f"client {self.client} has no labeled subset N={n}, fold={fold} "
                f"(N values {sorted(self.labeled)}, "
                f"{len(next(iter(self.labeled.values()), []))} folds)"
            ) from None

    def val_patients(self, n: int, fold: int) -> list[str]:
        """The validation patients of fold ``fold`` at N = ``n`` (possibly none)."""
        return self.val[int(n)][int(fold)]

    def test_patients(self, fold: int) -> list[str]:
        return self.test[int(fold)]

    def all_test_patients(self) -> list[str]:
        """Every patient this client tests on, in any fold."""
        return sorted({p for fold in self.test for p in fold})

    def roles(self, n: int, fold: int) -> dict[str, list[str]]:
        """Role -> patients for one (N, fold): pretrain, labeled, val, test."""
        return {
            "pretrain": self.pretrain,
            "labeled": self.labeled_patients(n, fold),
            "val": self.val_patients(n, fold),
            "test": self.test_patients(fold),
        }

    def to_dict(self) -> dict:
        return {
            "client": self.client,
            "pretrain": self.pretrain,
            "labeled": {str(n): folds for n, folds in sorted(self.labeled.items())},
            "val": {str(n): folds for n, folds in sorted(self.val.items())},
            "test": self.test,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClientSplit:
        return cls(
            int(d["client"]),
            list(d["pretrain"]),
            {int(n): [list(s) for s in folds] for n, folds in d["labeled"].items()},
            {int(n): [list(s) for s in folds] for n, folds in d["val"].items()},
            [list(s) for s in d["test"]],
        )


@dataclass
class Split:
    """The arguments that made it (``params``) and one ``ClientSplit`` per client."""

    params: dict
    clients: list[ClientSplit]

    def to_dict(self) -> dict:
        return {"params": self.params, "clients": [c.to_dict() for c in self.clients]}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    def client(self, k: int) -> ClientSplit:
        return self.clients[k]

    def labeled(self, k: int, n: int, fold: int) -> list[str]:
        return self.clients[k].labeled_patients(n, fold)

    @property
    def protocol(self) -> str:
        return self.params.get("protocol", "own")

    @property
    def folds(self) -> int:
        """Folds per client (the configured count, or the leave-one-out count)."""
        return int(self.params["folds"])

    def test_patients(self) -> list[str]:
        """Every patient tested on, by any client in any fold."""
        return sorted({p for c in self.clients for p in c.all_test_patients()})

    def pretrain_patients(self) -> list[str]:
        return sorted(p for c in self.clients for p in c.pretrain)

    def save(self, path: str | Path) -> Path:
        """Write readable JSON (with the hash) atomically: temp file, fsync, rename."""
        path = Path(path)
        atomic_write_text(
            path, json.dumps({**self.to_dict(), "hash": self.hash}, sort_keys=True, indent=1) + "\n"
        )
        return path

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(dict(d["params"]), [ClientSplit.from_dict(c) for c in d["clients"]])

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a saved split; DataError when unreadable or edited (hash mismatch)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            split = cls.from_dict(d)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(path, f"unreadable split file ({type(exc).__name__}: {exc})") from exc
        if "hash" not in d:
            raise DataError(
                path, "the split file has no 'hash'; a split is trusted only with its hash"
            )
        if d["hash"] != split.hash:
            raise DataError(
                path,
                f"split hash {d['hash']} does not match its content "
                f"({split.hash}); was the file edited?",
            )
        return split


# ----------------------------------------------------------------------- assignment


def _largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    share = weights / weights.sum() * n
    counts = np.floor(share).astype(int)
    order = sorted(range(len(share)), key=lambda k: (-(share[k] - counts[k]), k))
    for k in order[: n - counts.sum()]:
        counts[k] += 1
    return counts


def _by_group(ids: list[str], groups: dict) -> dict:
    out: dict = {}
    for p in ids:
        out.setdefault(groups[p] or "", []).append(p)
    return dict(sorted(out.items()))


def _by_site(ids, sites: dict[str, int], k: int) -> list[list[str]]:
    """Scheme "sites": each client is a site and holds the patients that site published."""
    out: list[list[str]] = [[] for _ in range(k)]
    for p in sorted(ids):
        out[sites[p]].append(p)
    return out


def _assign(
    ids, groups, k, scheme, alpha, rng, need: tuple[int, int], sites=None
) -> list[list[str]]:
    """Training patients per client. ``need`` = (minimum to be usable, minimum wished)."""
    ids = sorted(ids)
    if sites is not None:
        return _by_site(ids, sites, k)
    if scheme == "iid":
        perm = [str(p) for p in rng.permutation(ids)]
        return [sorted(perm[c::k]) for c in range(k)]
    if scheme == "group":
        missing = [p for p in ids if groups[p] is None]
        if missing:
            raise SplitError(
                f"scheme 'group' needs pathology groups; {missing[0]} and "
                f"{len(missing) - 1} more have none (HVSMR has no groups)"
            )
        perm = {str(p): i for i, p in enumerate(rng.permutation(ids))}
        ordered = sorted(ids, key=lambda p: (groups[p], perm[p]))
        return [sorted(chunk.tolist()) for chunk in np.array_split(np.array(ordered), k)]
    # dirichlet: per group, proportions ~ Dir(alpha) over clients; redraw (seeded) a
    # bounded number of times until every client has enough patients
    by_group = _by_group(ids, groups)
    fallback = None
    for _ in range(200):
        clients: list[list[str]] = [[] for _ in range(k)]
        for members in by_group.values():
            counts = _largest_remainder(rng.dirichlet([alpha] * k), len(members))
            perm = [str(p) for p in rng.permutation(members)]
            for c, chunk in enumerate(np.split(np.array(perm), np.cumsum(counts)[:-1])):
                clients[c].extend(chunk.tolist())
        sizes = [len(c) for c in clients]
        if min(sizes) >= need[1]:
            return [sorted(c) for c in clients]
        if fallback is None and min(sizes) >= need[0]:
            fallback = clients
    return [sorted(c) for c in (fallback or clients)]


def _assign_like(ids, groups, train: list[list[str]], scheme, rng, sites=None) -> list[list[str]]:
    """Spread test patients over clients the way the training patients were spread."""
    k = len(train)
    if sites is not None:
        return _by_site(ids, sites, k)
    out: list[list[str]] = [[] for _ in range(k)]
    if scheme == "iid":
        for i, p in enumerate(rng.permutation(sorted(ids))):
            out[i % k].append(str(p))
        return [sorted(c) for c in out]
    held = np.array(
        [[sum((groups[p] or "") == g for p in c) for c in train] for g in _by_group(ids, groups)],
        dtype=float,
    )
    for row, members in zip(held, _by_group(ids, groups).values(), strict=False):
        perm = [str(p) for p in rng.permutation(members)]
        if row.sum() == 0:  # a group no client trains on: fill the emptiest clients
            for p in perm:
                out[min(range(k), key=lambda c: (len(out[c]), c))].append(p)
            continue
        counts = _largest_remainder(row, len(perm))
        for c, chunk in enumerate(np.split(np.array(perm), np.cumsum(counts)[:-1])):
            out[c].extend(chunk.tolist())
    return [sorted(c) for c in out]


def _labeled_folds(pool: list[str], n: int, folds: int, rng) -> list[list[str]]:
    """``folds`` subsets of size ``n``: disjoint while the pool allows, then distinct
    while possible, then repeats."""
    perm = [str(p) for p in rng.permutation(pool)]
    subsets = [sorted(perm[f * n : (f + 1) * n]) for f in range(min(folds, len(pool) // n))]
    seen = {tuple(s) for s in subsets}
    possible = math.comb(len(pool), n)
    tries = 0
    while len(subsets) < folds:
        cand = tuple(sorted(str(p) for p in rng.choice(pool, n, replace=False)))
        tries += 1
        if cand not in seen or len(seen) >= possible or tries > 1000:
            seen.add(cand)
            subsets.append(list(cand))
    return subsets


# ----------------------------------------------------------------------------- API


def _validation_after(rest: list[str], n: int, val_per_client: int) -> list[str]:
    """The last ``val_per_client`` of ``rest`` that are not among its first ``n`` (labeled)."""
    return sorted(rest[max(n, len(rest) - val_per_client) :])


def _kfold_client(
    k: int, pool: list[str], folds: int, n_values, val_per_client: int, seed: int
) -> ClientSplit:
    """Cross-validation within one client: ``folds`` disjoint test blocks covering ``pool``;
    in each fold the other patients in a seeded order, the first N labeled (nested in N)
    and the last ``val_per_client`` of those left for validation (none once N takes all).
    Every patient pretrains (FCL, Wu et al. 2021)."""
    order = [str(p) for p in np.random.default_rng([seed, 2, k]).permutation(sorted(pool))]
    blocks = [sorted(b.tolist()) for b in np.array_split(np.array(order), folds)]
    labeled: dict[int, list[list[str]]] = {n: [] for n in n_values}
    val: dict[int, list[list[str]]] = {n: [] for n in n_values}
    for f, block in enumerate(blocks):
        others = sorted(set(pool) - set(block))
        rest = [str(p) for p in np.random.default_rng([seed, 3, k, f]).permutation(others)]
        for n in n_values:
            if n > len(rest):
                raise SplitError(
                    f"client {k}: N={n} exceeds the {len(rest)} patients left after fold "
                    f"{f}'s test block of {len(block)} ({len(pool)} patients, {folds} folds)"
                )
            labeled[n].append(sorted(rest[:n]))
            val[n].append(_validation_after(rest, n, val_per_client))
    return ClientSplit(k, sorted(pool), labeled, val, blocks)


def _check_common(clients, folds, val_per_client, n_values, test_fraction) -> list[int]:
    if clients < 1 or folds < 1 or val_per_client < 0 or not 0 < test_fraction < 1:
        raise SplitError(
            f"need clients >= 1, folds >= 1, val_per_client >= 0 and "
            f"0 < test_fraction < 1 (got {clients}, {folds}, {val_per_client}, "
            f"{test_fraction})"
        )
    n_values = sorted({int(n) for n in n_values})
    if not n_values or n_values[0] < 1:
        raise SplitError(f"n_values must be positive integers, got {n_values}")
    return n_values


def make_split(
    records: list[PatientRecord],
    *,
    clients: int,
    protocol: str = "own",
    scheme: str = "iid",
    alpha: float = 0.5,
    n_values=(1, 2, 4, 8),
    folds: int = 5,
    val_per_client: int = 1,
    test: str = "auto",
    test_fraction: float = 0.2,
    test_ids=None,
    seed: int = 0,
    manifest: str | None = None,
) -> Split:
    """Split the patients over ``clients`` clients and give each patient its roles.

    ``protocol`` (docs/PROTOCOL.md): ``own`` (test patients never pretrained on,
    see ``_own_split``), ``fcl`` (Wu et al. 2021: per client, ``folds``-fold
    cross-validation over its training patients, all of them pretrained on) or
    ``chaitanya`` (Chaitanya et al. 2020: one client, the fixed 20 test patients,
    ``folds`` labeled subsets of N). ``scheme`` says how patients go to clients:
    "iid" (seeded shuffle, round robin), "group" (contiguous blocks of patients
    sorted by pathology group: non-IID) or "dirichlet" (per group, proportions
    ~ Dir(alpha) over clients). Raises SplitError naming the client when a client
    is empty or N exceeds its pool.
    """
    if protocol not in PROTOCOLS:
        raise SplitError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if scheme not in SCHEMES and not (scheme == "sites" and manifest is not None):
        raise SplitError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    if test not in TEST_MODES:
        raise SplitError(f"test must be one of {TEST_MODES}, not {test!r}")
    n_values = _check_common(clients, folds, val_per_client, n_values, test_fraction)
    ids = [r.patient_id for r in records]
    if len(set(ids)) != len(ids):
        raise SplitError("duplicate patient ids in the records")
    sites = None
    if manifest is not None:
        sites = {r.patient_id: int(r.site) for r in records}
        held = max(sites.values()) + 1
        if held != clients:
            raise SplitError(
                f"split.clients={clients}, but the federation manifest has {held} sites "
                "(one client per site)"
            )
        scheme = "sites"
    params = {
        "protocol": protocol,
        "clients": clients,
        "scheme": scheme,
        "alpha": float(alpha),
        "n_values": n_values,
        "folds": folds,
        "val_per_client": val_per_client,
        "test": test,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "layouts": sorted({r.layout for r in records}),
        "patients": len(records),
    }
    if manifest is not None:
        params["manifest"] = manifest
    if protocol == "fcl":
        out = _fcl_split(
            records, clients, scheme, alpha, n_values, folds, val_per_client, seed, sites
        )
        params.update(test_mode="kfold", test_in_pretraining=True)
    elif protocol == "chaitanya":
        if clients != 1:
            raise SplitError(f"protocol 'chaitanya' trains one client, not clients={clients}")
        out = [_chaitanya_client(records, n_values, folds, val_per_client, seed)]
        params.update(test_mode="fixed", test_in_pretraining=False, test_ids=CHAITANYA_TEST_IDS)
    else:
        out, mode, folds = _own_split(
            records,
            clients,
            scheme,
            alpha,
            n_values,
            folds,
            val_per_client,
            test,
            test_fraction,
            test_ids,
            seed,
            sites,
        )
        params.update(test_mode=mode, folds=folds, test_in_pretraining=mode == "leave_one_out")
        if test_ids is not None:
            params["test_ids"] = sorted(set(test_ids))
    return Split(params, out)


def _check_test_ids(test_ids, by_id) -> list[str]:
    test_ids = sorted(set(test_ids))
    unknown = [p for p in test_ids if p not in by_id]
    if unknown:
        raise SplitError(
            f"test patients not among the records: {', '.join(unknown[:5])}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        )
    unlabeled = [p for p in test_ids if not by_id[p].labeled]
    if unlabeled:
        raise SplitError(f"test patients without labels: {', '.join(unlabeled[:5])}")
    return test_ids


def _fcl_split(records, clients, scheme, alpha, n_values, folds, val_per_client, seed, sites):
    """Wu et al. 2021: the training patients over the clients (ACDC: 10 x 10), then per
    client ``folds``-fold cross-validation (5 folds of 2 test patients). The testing
    subset takes no part."""
    train = [r.patient_id for r in records if r.subset == "training"]
    unlabeled = [r.patient_id for r in records if r.subset == "training" and not r.labeled]
    if unlabeled:
        raise SplitError(
            f"protocol 'fcl' tests on every training patient; {unlabeled[0]} "
            f"and {len(unlabeled) - 1} more have no labels"
        )
    groups = {r.patient_id: r.group for r in records}
    need = (folds, folds + n_values[-1])
    assigned = _assign(
        train, groups, clients, scheme, alpha, np.random.default_rng([seed, 0]), need, sites
    )
    out = []
    for k, pool in enumerate(assigned):
        if len(pool) < folds:
            raise SplitError(
                f"client {k} gets {len(pool)} patients, fewer than the {folds} folds of "
                f"protocol 'fcl' ({len(train)} training patients, {clients} clients)"
            )
        out.append(_kfold_client(k, pool, folds, n_values, val_per_client, seed))
    return out


def _chaitanya_client(records, n_values, folds, val_per_client, seed) -> ClientSplit:
    """Chaitanya et al. 2020: the fixed 20 test patients; the other training patients
    pretrain, give ``val_per_client`` validation patients and ``folds`` labeled subsets."""
    by_id = {r.patient_id: r for r in records}
    test_ids = _check_test_ids(CHAITANYA_TEST_IDS, by_id)
    pool = sorted(
        r.patient_id for r in records if r.subset == "training" and r.patient_id not in test_ids
    )
    order = [str(p) for p in np.random.default_rng([seed, 2, 0]).permutation(pool)]
    val, lab_pool = sorted(order[:val_per_client]), sorted(order[val_per_client:])
    labeled = {}
    for n in n_values:
        if n > len(lab_pool):
            raise SplitError(
                f"client 0: N={n} exceeds its labeled pool of {len(lab_pool)} patients"
            )
        labeled[n] = _labeled_folds(lab_pool, n, folds, np.random.default_rng([seed, 3, 0, n]))
    return ClientSplit(
        0, pool, labeled, {n: [val] * folds for n in n_values}, [list(test_ids)] * folds
    )


def _own_split(
    records,
    clients,
    scheme,
    alpha,
    n_values,
    folds,
    val_per_client,
    test,
    test_fraction,
    test_ids,
    seed,
    sites,
):
    """Per client: pretrain = its training patients, val = ``val_per_client`` of them,
    ``labeled[N][fold]`` drawn from the rest, test = patients never pretrained on. With
    ``test="auto"`` and a labeled testing subset, testing patients are spread over clients
    like the training ones; otherwise (or ``test="holdout"``) ``test_fraction`` of each
    client's patients are held out of pretrain/val/labeled. ``test_ids`` fixes the test
    patients, taken out of training and spread likewise. A held-out scheme that leaves a
    client too few patients (HVSMR's 10 labeled volumes) falls back to leave-one-out
    cross-validation within each client. Returns (clients, test mode, folds)."""
    groups = {r.patient_id: r.group for r in records}
    by_id = {r.patient_id: r for r in records}
    train = [r.patient_id for r in records if r.subset == "training"]
    testing = [r for r in records if r.subset == "testing"]
    if test_ids is not None:
        test_ids = _check_test_ids(test_ids, by_id)
        mode, test_pool = "fixed", test_ids
        train = [p for p in train if p not in set(test_ids)]
    elif test == "auto" and testing and all(r.labeled for r in testing):
        mode, test_pool = "testing", [r.patient_id for r in testing]
    else:
        mode, test_pool = "holdout", []
    if not train:
        raise SplitError("no training patients to split")
    hold = 1 if mode == "holdout" else 0
    need = (1 + hold + val_per_client, hold + val_per_client + n_values[-1])
    assigned = _assign(
        train, groups, clients, scheme, alpha, np.random.default_rng([seed, 0]), need, sites
    )
    for k, pool in enumerate(assigned):
        if not pool:
            raise SplitError(
                f"client {k} gets no training patients ({len(train)} patients, "
                f"{clients} clients, scheme {scheme!r}); use fewer clients"
            )
    if mode == "holdout" and any(
        len(pool) - max(1, round(test_fraction * len(pool))) < val_per_client + n_values[-1]
        for pool in assigned
    ):
        return _leave_one_out(assigned, n_values, val_per_client, seed)
    test_assigned = (
        _assign_like(test_pool, groups, assigned, scheme, np.random.default_rng([seed, 1]), sites)
        if test_pool
        else None
    )
    out = []
    for k, pool in enumerate(assigned):
        perm = [str(p) for p in np.random.default_rng([seed, 2, k]).permutation(pool)]
        if mode == "holdout":
            n_test = max(1, round(test_fraction * len(perm)))
            client_test, perm = sorted(perm[:n_test]), perm[n_test:]
        else:
            client_test = test_assigned[k]
        if len(perm) <= val_per_client:
            raise SplitError(
                f"client {k} has {len(perm)} patients after test hold-out; "
                f"needs more than val_per_client={val_per_client}"
            )
        if not client_test:
            raise SplitError(
                f"client {k} gets no test patients (test mode {mode!r}, "
                f"scheme {scheme!r}); use fewer clients or another scheme"
            )
        val, lab_pool = sorted(perm[:val_per_client]), sorted(perm[val_per_client:])
        labeled = {}
        for n in n_values:
            if n > len(lab_pool):
                raise SplitError(
                    f"client {k}: N={n} exceeds its labeled pool of "
                    f"{len(lab_pool)} patients ({len(pool)} assigned, "
                    f"{val_per_client} val, {len(pool) - len(perm)} test)"
                )
            labeled[n] = _labeled_folds(lab_pool, n, folds, np.random.default_rng([seed, 3, k, n]))
        out.append(
            ClientSplit(
                k,
                sorted(perm),
                labeled,
                {n: [val] * folds for n in n_values},
                [client_test] * folds,
            )
        )
    return out, mode, folds


def _leave_one_out(assigned, n_values, val_per_client, seed):
    """Leave-one-out within each client: fold f tests one patient, N labeled from the others
    and validation from those left. Folds: the smallest client's patient count."""
    folds = min(len(pool) for pool in assigned)
    if folds < 2:
        raise SplitError(
            f"too few patients for a held-out test set or leave-one-out: the smallest "
            f"client has {folds} (N up to {n_values[-1]}, val_per_client={val_per_client}); "
            "use fewer clients"
        )
    out = []
    for k, pool in enumerate(assigned):
        # A client with more patients than ``folds`` tests on ``folds`` of them.
        client = _kfold_client(k, pool, len(pool), n_values, val_per_client, seed)
        client.labeled = {n: f[:folds] for n, f in client.labeled.items()}
        client.val = {n: f[:folds] for n, f in client.val.items()}
        client.test = client.test[:folds]
        out.append(client)
    return out, "leave_one_out", folds
