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
    """The ``own`` protocol: test patients are never pretrained on, labeled, or validated on."""
    train = {r.patient_id for r in records if r.subset == "training"}
    seen = [p for c in split.clients for p in c.pretrain + c.all_test_patients()]
    assert len(seen) == len(set(seen))  # every patient in at most one client, once
    for c in split.clients:
        assert not set(c.all_test_patients()) & set(c.pretrain)
        assert len(c.test) == split.folds
        for n, folds in c.labeled.items():
            assert len(folds) == split.params["folds"]
            for fold, subset in enumerate(folds):
                val = c.val_patients(n, fold)
                assert len(subset) == n and len(set(subset)) == n
                assert set(subset) <= set(c.pretrain) and set(val) <= set(c.pretrain)
                assert not set(subset) & set(val) and not set(subset) & set(c.test[fold])
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
    assert [len(c.all_test_patients()) for c in split.clients] == [5] * 10
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
    for c, g in zip(group_split.clients, per_client, strict=True):  # test patients follow groups
        assert {groups[p] for p in c.all_test_patients()} == g


def test_holdout_excluded_from_pretrain_and_labeled():
    records = acdc_like(n_test=10, test_labels=False)  # unlabeled testing -> holdout
    split = make_split(records, clients=4, n_values=(1, 2), test="auto", test_fraction=0.2)
    assert split.params["test_mode"] == "holdout"
    check_invariants(split, records)
    assert all(len(c.all_test_patients()) == 5 and len(c.pretrain) == 20 for c in split.clients)
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
    with pytest.raises(SplitError, match=r"client 0: N=8 exceeds its labeled pool of 4 patients"):
        make_split(acdc_like(n_train=10, n_test=5), clients=2, n_values=(1, 8))
    with pytest.raises(SplitError, match=r"client 0: N=8 exceeds the 4 patients left"):
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
    doc["clients"][0]["val"]["1"][0] = ["patient999"]
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


def _roles_disjoint_within_each_fold(client, n_values, folds):
    for n in n_values:
        for fold in range(folds):
            roles = client.roles(n, fold)
            in_fold = roles["labeled"] + roles["val"] + roles["test"]
            assert len(in_fold) == len(set(in_fold)), (client.client, n, fold, roles)


def test_fcl_protocol_reproduces_the_published_fold_structure():
    """Wu et al. 2021: 10 clients of 10 ACDC training patients; per client 5 folds of 2 test
    patients; N from the other 8; no validation patient at N = 8; every volume pretrained on."""
    records = acdc_like()
    split = make_split(records, protocol="fcl", clients=10, n_values=(1, 2, 4, 8), folds=5)
    training = {r.patient_id for r in records if r.subset == "training"}
    assert split.protocol == "fcl" and split.params["test_in_pretraining"] is True
    assert sorted(p for c in split.clients for p in c.pretrain) == sorted(training)
    for c in split.clients:
        assert len(c.pretrain) == 10 and [len(t) for t in c.test] == [2] * 5
        assert sorted(p for t in c.test for p in t) == c.pretrain  # the folds cover the client
        _roles_disjoint_within_each_fold(c, (1, 2, 4, 8), 5)
        for fold in range(5):
            others = set(c.pretrain) - set(c.test[fold])
            for n in (1, 2, 4, 8):
                assert len(c.labeled_patients(n, fold)) == n
                assert set(c.labeled_patients(n, fold)) <= others
                assert len(c.val_patients(n, fold)) == (0 if n == 8 else 1)
                assert set(c.val_patients(n, fold)) <= others
            assert set(c.labeled_patients(8, fold)) == others
    assert make_split(records, protocol="fcl", clients=10).hash == split.hash


def test_chaitanya_protocol_uses_exactly_the_listed_test_patients():
    records = acdc_like()
    split = make_split(records, protocol="chaitanya", clients=1, n_values=(1, 2, 8), folds=5)
    (client,) = split.clients
    listed = [f"patient{i:03d}" for b in (0, 20, 40, 60, 80) for i in range(b + 7, b + 11)]
    assert all(fold == listed for fold in client.test) and len(client.test) == 5
    assert not set(listed) & set(client.pretrain)
    assert set(client.pretrain) == {f"patient{i:03d}" for i in range(1, 101)} - set(listed)
    for n in (1, 2, 8):
        assert len({tuple(s) for s in client.labeled[n]}) == 5  # 5 different labeled subsets
    _roles_disjoint_within_each_fold(client, (1, 2, 8), 5)
    with pytest.raises(SplitError, match="one client"):
        make_split(records, protocol="chaitanya", clients=2)
    with pytest.raises(SplitError, match="test patients not among the records: patient007"):
        make_split(acdc_like(n_train=6, n_test=0), protocol="chaitanya", clients=1, n_values=(1,))


def test_small_target_falls_back_to_leave_one_out():
    """HVSMR: 10 labeled training volumes, too few for a held-out test patient plus N = 8."""

    def rec(i):
        frame = FrameRecord("volume", Path(f"p{i}.nii.gz"), Path(f"p{i}-label.nii.gz"))
        return PatientRecord(f"pat{i}", "training", None, [frame], layout="hvsmr")

    split = make_split([rec(i) for i in range(10)], clients=1, n_values=(1, 2, 4, 8), folds=5)
    (client,) = split.clients
    assert split.params["test_mode"] == "leave_one_out" and split.folds == 10
    assert sorted(p for t in client.test for p in t) == [f"pat{i}" for i in range(10)]
    assert all(len(t) == 1 for t in client.test)
    _roles_disjoint_within_each_fold(client, (1, 2, 4, 8), 10)
    assert all(len(client.val_patients(8, f)) == 1 for f in range(10))
    two = make_split([rec(0), rec(1)], clients=1, n_values=(1,), folds=5)
    assert two.folds == 2 and sorted(two.clients[0].test) == [["pat0"], ["pat1"]]
    assert two.clients[0].val_patients(1, 0) == []
    with pytest.raises(SplitError, match="too few patients"):
        make_split([rec(0), rec(1)], clients=2, n_values=(1,))
