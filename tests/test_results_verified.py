"""Result units: written with a manifest, verified before being skipped or reported."""

from __future__ import annotations

import json

import pytest

from bench.datasets.errors import DataError
from bench.results import ROW_COLUMNS, ResultStore, read_rows

UNIT = {"method": "simclr", "seed": 0, "mode": "local", "n": 1, "fold": 0}
HASHES = {"config_hash": "c0ffee0000000001", "split_hash": "7451316007e79229"}


def unit_rows(dice=0.5, split_hash=HASHES["split_hash"]):
    return [
        {
            "method": "simclr",
            "pretrain_setting": "federated",
            "pretrain_dataset": "acdc",
            "finetune_mode": "local",
            "dataset": "acdc",
            "n_labeled": 1,
            "fold": 0,
            "client": client,
            "patient": f"{client:03d}",
            "phase": "ED",
            "class_name": name,
            "dice": dice,
            "seed": 0,
            "split_hash": split_hash,
            "config_hash": HASHES["config_hash"],
            "preset": "tiny",
            "code_version": "1e5",
            "versions": "{}",
        }
        for client in range(2)
        for name in ("RV", "Myo", "LV")
    ]


@pytest.fixture
def store(tmp_path):
    store = ResultStore(tmp_path)
    store.write(UNIT, unit_rows())
    return store


def test_a_written_unit_verifies_and_reads_identifiers_as_text(store):
    assert store.status(UNIT, **HASHES) == (True, None)
    rows = store.load(split_hash=HASHES["split_hash"])
    assert list(rows.columns[: len(ROW_COLUMNS)]) == ROW_COLUMNS
    # digits and one "e": a float (inf) if read as a number
    assert set(rows["split_hash"]) == {"7451316007e79229"}
    assert set(rows["patient"]) == {"000", "001"} and set(rows["code_version"]) == {"1e5"}


def test_a_truncated_unit_is_not_finished_and_says_why(store):
    path = store.unit_path(UNIT)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.45)])
    finished, why = store.status(UNIT, **HASHES)
    assert not finished and "SHA-256" in why


def test_a_unit_without_manifest_or_of_another_config_is_recomputed(store):
    finished, why = store.status(UNIT, config_hash="another", split_hash=HASHES["split_hash"])
    assert not finished and "config" in why
    store.manifest_path(store.unit_path(UNIT)).unlink()
    finished, why = store.status(UNIT, **HASHES)
    assert not finished and "no manifest" in why
    with pytest.raises(DataError, match="no manifest"):
        store.load()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda text: text.replace(",0.5,", ",5.0,", 1), "outside"),
        (lambda text: text.replace(",0.5,", ",abc,", 1), "not a number"),
        (lambda text: text + text.splitlines()[1] + "\n", "share a key"),
        (lambda text: text.replace("dice", "dise", 1), "lack the columns dice"),
        (lambda text: "", "unreadable"),
        (lambda text: "\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "unreadable"),
    ],
    ids=["dice-5", "dice-abc", "duplicated-row", "missing-column", "empty", "binary"],
)
def test_bad_rows_are_refused_naming_the_file(store, edit, message):
    path = store.unit_path(UNIT)
    path.write_text(edit(path.read_text()), encoding="latin-1")
    with pytest.raises(DataError, match=message) as error:
        read_rows(path)
    assert path.name in str(error.value)
    assert not store.status(UNIT, **HASHES)[0]


def test_bad_rows_are_never_written(tmp_path):
    with pytest.raises(DataError, match="outside"):
        ResultStore(tmp_path).write(UNIT, unit_rows(dice=1.5))
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_manifest_copied_onto_another_unit_does_not_verify(store):
    other = {**UNIT, "fold": 1}
    source = store.unit_path(UNIT)
    store.unit_path(other).write_bytes(source.read_bytes())
    store.manifest_path(store.unit_path(other)).write_text(store.manifest_path(source).read_text())
    finished, why = store.status(other, **HASHES)
    assert not finished and "describes" in why
    assert json.loads(store.manifest_path(source).read_text())["rows"] == 6
