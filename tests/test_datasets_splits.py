"""Client splits: determinism, coverage, disjointness, schemes and clear errors."""

import argparse
import json
from pathlib import Path

import pytest

from bench.cli_data import add_data_commands
from bench.datasets.errors import DataError
from bench.datasets.records import FrameRecord, PatientRecord
from bench.datasets.splits import CHAITANYA_TEST_IDS, Split, SplitError, make_split
from bench.datasets.synthetic import write_synthetic

GROUPS = ["DCM", "HCM", "MINF", "NOR", "RV"]


def acdc_like(n_train=100, n_test=50, test_labels=True):
    def rec(i, subset, group, labeled):
        frame = FrameRecord(
            "ED", Path(f"p{i}.nii.gz"), Path(f"p{i}_gt.nii.gz") if labeled else None
        )
        return PatientRecord(f"patient{i:03d}", subset, group, [frame])

    train = [rec(i + 1, "training", GROUPS[i * 5 // n_train], True) for i in range(n_train)]
    test = [rec(n_train + i + 1, "testing", GROUPS[i % 5], test_labels) for i in range(n_test)]
    return train + test


def check_invariants(split, records):
    train = {r.patient_id for r in records if r.subset == "training"}
    seen = [p for c in split.clients for p in c.pretrain + c.test]
    assert len(seen) == len(set(seen))  # every patient in at most one client, once
    for c in split.clients:
        assert set(c.val) <= set(c.pretrain) and not set(c.test) & set(c.pretrain)
        for n, folds in c.labeled.items():
            assert len(folds) == split.params["folds"]
            for subset in folds:
                assert len(subset) == n and len(set(subset)) == n
                assert set(subset) <= set(c.pretrain)
                assert not set(subset) & set(c.val) and not set(subset) & set(c.test)
    assert train <= set(seen)


@pytest.mark.parametrize("scheme", ["iid", "group", "dirichlet"])
def test_deterministic_and_complete(scheme):
    records = acdc_like()
    kw = {
        "clients": 5 if scheme == "dirichlet" else 10,
        "scheme": scheme,
        "alpha": 1.0,
        "n_values": (1, 2, 4),
        "folds": 5,
        "seed": 3,
    }
    a, b = make_split(records, **kw), make_split(records, **kw)
    assert a.to_json() == b.to_json() and a.hash == b.hash and len(a.hash) == 16
    assert make_split(records, **{**kw, "seed": 4}).hash != a.hash
    check_invariants(a, records)
    testing = {r.patient_id for r in records if r.subset == "testing"}
    assert set(a.test_patients()) == testing  # test="auto" with a labeled testing subset


def test_iid_balanced_and_folds_distinct():
    split = make_split(acdc_like(), clients=10, n_values=(1, 2, 4, 8), folds=5, seed=0)
    assert [len(c.pretrain) for c in split.clients] == [10] * 10
    assert [len(c.test) for c in split.clients] == [5] * 10
    for c in split.clients:
        for n in (1, 2, 4):
            assert len({tuple(s) for s in c.labeled[n]}) == 5
        firsts = c.labeled[1]
        assert len({s[0] for s in firsts}) == 5  # N=1: five different patients


def test_group_scheme_is_non_iid():
    records = acdc_like()
    groups = {r.patient_id: r.group for r in records}
    group_split = make_split(records, clients=10, scheme="group", seed=0)
    iid_split = make_split(records, clients=10, scheme="iid", seed=0)
    per_client = [{groups[p] for p in c.pretrain} for c in group_split.clients]
    assert all(len(g) == 1 for g in per_client)
    assert max(len({groups[p] for p in c.pretrain}) for c in iid_split.clients) >= 3
    for c, g in zip(
        group_split.clients, per_client, strict=False
    ):  # test patients follow the groups
        assert {groups[p] for p in c.test} == g


def test_holdout_excluded_from_pretrain_and_labeled():
    records = acdc_like(n_test=10, test_labels=False)  # unlabeled testing -> holdout
    split = make_split(records, clients=4, n_values=(1, 2), test="auto", test_fraction=0.2)
    assert split.params["test_mode"] == "holdout"
    check_invariants(split, records)
    assert all(len(c.test) == 5 and len(c.pretrain) == 20 for c in split.clients)
    assert not set(split.test_patients()) & {r.patient_id for r in records[100:]}


def test_fixed_test_ids():
    split = make_split(
        acdc_like(n_test=0), clients=1, test_ids=CHAITANYA_TEST_IDS, n_values=(1, 2, 8)
    )
    assert split.test_patients() == sorted(CHAITANYA_TEST_IDS) and len(CHAITANYA_TEST_IDS) == 20
    assert not set(CHAITANYA_TEST_IDS) & set(split.clients[0].pretrain)


def test_empty_client_and_n_too_large_errors():
    records = acdc_like(n_train=6, n_test=0)
    with pytest.raises(SplitError, match=r"client 6 gets no training patients"):
        make_split(records, clients=8, test="holdout", n_values=(1,))
    with pytest.raises(SplitError, match=r"client 0: N=8 exceeds its labeled pool of 3"):
        make_split(acdc_like(n_train=10, n_test=0), clients=2, n_values=(1, 8))
    with pytest.raises(SplitError, match="needs pathology groups"):
        recs = acdc_like(n_train=10, n_test=0)
        recs[0].group = None
        make_split(recs, clients=2, scheme="group", n_values=(1,))


def test_save_load_roundtrip_and_tamper(tmp_path):
    split = make_split(acdc_like(), clients=10, seed=1)
    path = split.save(tmp_path / "s" / "split.json")
    assert not list(path.parent.glob("*.tmp"))
    loaded = Split.load(path)
    assert loaded.hash == split.hash and loaded.labeled(3, 4, 2) == split.labeled(3, 4, 2)
    doc = json.loads(path.read_text())
    doc["clients"][0]["val"] = ["patient999"]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="does not match"):
        Split.load(path)


def test_cli_split_prints_hash(tmp_path, capsys):
    root = write_synthetic(
        tmp_path / "data",
        "acdc",
        n_train=10,
        n_test=5,
        seed=0,
        size_range=(24, 32),
        slices_range=(3, 4),
    )
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "split.json"
    args = parser.parse_args(
        [
            "data",
            "split",
            "--data",
            str(root),
            "--clients",
            "2",
            "--n-values",
            "1,2",
            "--folds",
            "3",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == Split.load(out).hash
    args = parser.parse_args(
        [
            "data",
            "split",
            "--data",
            str(root),
            "--clients",
            "2",
            "--n-values",
            "1,8",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 2
    assert "N=8" in capsys.readouterr().err
