"""Site-local data, in one process: each site reads only its own folder, the coordinator none.

The sites' ClientApps run in this process (an in-process grid whose nodes carry a
site config), so the code under test is the one a SuperNode runs, minus the
processes: the manifest, the split made from it, the sites' folder checks, the
site-local tasks and the closing exchange that brings back metrics only. The
loopback test (tests/test_federation_loopback.py) runs the same on real processes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from flwr.app import Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from bench import runner as runner_module
from bench.cli import main
from bench.datasets.errors import DataError
from bench.datasets.manifest import (
    FederationManifest,
    check_site_folder,
    manifest_records,
    read_site_manifest,
)
from bench.datasets.splits import make_split
from bench.datasets.synthetic import write_synthetic
from bench.federated.apps import client_app, server_app
from bench.federated.checkpoint import load_final
from bench.federated.federation import deployment_spec
from bench.federated.grid import InProcessGrid
from bench.federated.jobs import forget_task, register_task, write_job
from bench.federated.loopback import split_folder_into_sites
from bench.federated.site import SiteConfig, spec_at_site

SITES = 3

# The smallest run that still pretrains (FCL, feature vectors exchanged), fine-tunes in both
# modes and tests at every site.
RUN_SETTINGS = [
    "data.preprocess.size=32",
    "model.widths=[4,8,16]",
    "pretrain.rounds=2",
    "pretrain.local_steps=1",
    "pretrain.volumes_per_batch=2",
    "finetune.rounds=1",
    "finetune.local_steps=1",
    "finetune.batch_size=2",
    "finetune.modes=[federated,local]",
    "split.n_values=[1]",
    f"split.clients={SITES}",
    "run.threads=1",
    "run.tracker=none",
]


@pytest.fixture(scope="module")
def federation_data(tmp_path_factory):
    """A full synthetic ACDC folder (9 training, 3 testing patients) and 3 site folders holding
    disjoint parts of it, each initialised with ``bench site init``."""
    root = tmp_path_factory.mktemp("fed-sites")
    full = root / "full"
    write_synthetic(full, "acdc", 9, 3, seed=0)
    site_dirs = []
    for k, data in enumerate(split_folder_into_sites(full, root, SITES)):
        assert main(["site", "init", "--name", f"site{k}", "--data", str(data),
                     "--out", str(root / f"site{k}")]) == 0  # fmt: skip
        site_dirs.append(root / f"site{k}")
    manifest = FederationManifest.join([read_site_manifest(d / "manifest.json") for d in site_dirs])
    manifest.save(root / "manifest.json")
    return root, full, site_dirs, manifest


def test_the_split_keeps_each_sites_patients_and_its_hash_covers_the_manifest(federation_data):
    root, _, site_dirs, manifest = federation_data
    records = manifest_records(manifest)
    split = make_split(records, clients=SITES, n_values=(1,), folds=1, manifest=manifest.hash)
    for k, client in enumerate(split.clients):
        site_ids = {p["id"] for p in manifest.part(k)["patients"]}
        held = set(client.pretrain) | set(client.all_test_patients())
        held |= {p for folds in client.val.values() for ids in folds for p in ids}
        assert held <= site_ids and client.all_test_patients()
    assert split.params["manifest"] == manifest.hash and split.params["scheme"] == "sites"
    # Another content hash for one patient: another manifest, another split hash.
    edited = json.loads(json.dumps(manifest.to_dict()))
    edited["sites"][0]["patients"][0]["sha256"] = "0" * 64
    other = FederationManifest.from_dict(edited, root / "edited.json")
    assert other.hash != manifest.hash
    again = make_split(records, clients=SITES, n_values=(1,), folds=1, manifest=other.hash)
    assert again.hash != split.hash
    assert [c.to_dict() for c in again.clients] == [c.to_dict() for c in split.clients]


def test_a_site_whose_data_changed_since_enrollment_is_refused(federation_data, tmp_path, capsys):
    _, _, site_dirs, _ = federation_data
    site = site_dirs[1]
    data = tmp_path / "data"
    shutil.copytree(site.parent / "data-site1", data)
    part = read_site_manifest(site / "manifest.json")
    assert len(check_site_folder(data, part)) == len(part["patients"])
    image = sorted(data.glob("database/*/patient*/*_frame01.nii.gz"))[0]
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(DataError, match="changed since enrollment.*files of patient"):
        check_site_folder(data, part)
    shutil.rmtree(image.parent)
    with pytest.raises(DataError, match="changed since enrollment.*is missing"):
        check_site_folder(data, part)
    # The CLI says it in one line, exit 2 (site1's own folder is unchanged: it passes).
    assert main(["site", "check", "--site", str(site)]) == 0
    assert "holds the" in capsys.readouterr().out
    config = (site / "site.toml").read_text()
    moved = tmp_path / "moved-site"
    shutil.copytree(site, moved)
    (moved / "site.toml").write_text(config.replace(str(site.parent / "data-site1"), str(data)))
    assert main(["site", "check", "--site", str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: ") and "changed since enrollment" in err
    assert len(err.splitlines()) == 1


def test_site_commands_reject_bad_input_in_one_line(federation_data, tmp_path, capsys):
    _, _, site_dirs, _ = federation_data
    assert main(["site", "init", "--name", "x", "--data", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "s")]) == 2  # fmt: skip
    assert main(["site", "init", "--name", "site0", "--data", str(tmp_path),
                 "--out", str(site_dirs[0])]) == 2  # fmt: skip
    assert main(["site", "check", "--site", str(tmp_path)]) == 2
    assert main(["federation", "status", "--federation", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 4 and all(line.startswith("bench: error: ") for line in lines)
    assert not (tmp_path / "s").exists()  # nothing written for a bad --data
    key = site_dirs[0] / "keys" / "site0"
    assert key.stat().st_mode & 0o777 == 0o600


def run_at_sites(site_dirs: list[Path]):
    """``run_task`` for the coordinator's tasks: the sites' ClientApps, in this process."""

    def run(task, run_cfg):
        work_dir = Path(task.work_dir)
        if not (work_dir / "server" / "final.pt").exists():
            spec = deployment_spec(task)
            job = write_job(work_dir / "job.json", spec)
            register_task(job, task)  # the coordinator's task: no image
            run_config = {"job": str(job), "job-spec": json.dumps(spec, default=str)}
            grid = InProcessGrid(client_app, len(site_dirs), run_config)
            for context in grid.contexts.values():
                partition = context.node_config["partition-id"]
                context.node_config["site"] = str(site_dirs[partition] / "site.toml")
            context = Context(1, SUPERLINK_NODE_ID, {}, RecordDict(), run_config)
            try:
                server_app(grid, context)
            finally:
                forget_task(job)
        return load_final(work_dir)

    return run


def _rows(run_dir: Path) -> pd.DataFrame:
    from bench.results import ResultStore

    return ResultStore(run_dir).load().drop(columns=["config_hash"])


@pytest.mark.slow
def test_sites_holding_only_their_patients_give_the_rows_of_one_process(
    federation_data, monkeypatch
):
    root, full, site_dirs, manifest = federation_data
    settings = [arg for setting in RUN_SETTINGS for arg in ("--set", setting)]
    monkeypatch.setattr(runner_module, "run_task", run_at_sites(site_dirs))
    coordinator = root / "run-coordinator"
    manifest_setting = ["--set", f"data.manifest={root / 'manifest.json'}"]
    assert main(["run", "--methods", "fcl", "--preset", "tiny", "--out", str(coordinator),
                 *manifest_setting, *settings, "-q"]) == 0  # fmt: skip
    federated = _rows(coordinator)
    # No image was read at the coordinator; each site preprocessed only its own patients.
    assert not (coordinator / "data").exists()
    monkeypatch.undo()
    reference = root / "run-one-process"
    assert main(["run", "--methods", "fcl", "--preset", "tiny", "--out", str(reference),
                 "--data", str(full), "--split", str(coordinator / "split.json"),
                 *settings, "-q"]) == 0  # fmt: skip
    expected = _rows(reference)
    assert set(federated["patient"]) == set(expected["patient"]) and len(expected) > 0
    key = ["finetune_mode", "client", "patient", "phase", "class_name"]
    pd.testing.assert_frame_equal(
        federated.sort_values(key).reset_index(drop=True),
        expected.sort_values(key).reset_index(drop=True),
    )
    for k in range(SITES):
        held = {p["id"] for p in manifest.part(k)["patients"]}
        assert set(federated[federated["client"] == k]["patient"]) <= held


def test_a_run_stops_naming_the_site_whose_data_changed(
    federation_data, tmp_path, monkeypatch, capsys
):
    """The site's ClientApp checks its folder when it builds a task: a changed site fails its
    first round with the one-line reason, and the run (every site needed) stops saying so."""
    root, _, site_dirs, _ = federation_data
    changed = tmp_path / "site2"
    shutil.copytree(site_dirs[2], changed)
    data = tmp_path / "data-site2"
    shutil.copytree(root / "data-site2", data)
    (changed / "site.toml").write_text(
        (changed / "site.toml").read_text().replace(str(root / "data-site2"), str(data))
    )
    patient = sorted(data.glob("database/*/patient*"))[0]
    shutil.rmtree(patient)
    monkeypatch.setattr(runner_module, "run_task", run_at_sites([*site_dirs[:2], changed]))
    settings = [arg for setting in RUN_SETTINGS for arg in ("--set", setting)]
    code = main(["run", "--methods", "fcl", "--preset", "tiny", "--out", str(tmp_path / "run"),
                 "--set", f"data.manifest={root / 'manifest.json'}", *settings, "-q"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2
    assert re.search(
        r"^bench: error: round 1: .*client 2: .*changed since enrollment.*missing", error, re.M
    ), error
    failures = json.loads(
        (tmp_path / "run/work/pretrain/fcl-seed0/server/failures.json").read_text()
    )
    assert [(f["round"], f["partition"]) for f in failures] == [(1, 2)]
    assert f"manifest patient {patient.name!r} is missing" in failures[0]["summary"]


def test_a_site_keeps_one_run_folder_per_coordinator_run(tmp_path):
    """A restarted coordinator resubmits the same run folder: the site finds its client states
    again (a restart resumes); another run gets another folder."""
    site = SiteConfig("site0", tmp_path / "data", tmp_path / "work", tmp_path)
    spec = {"run_dir": "/coordinator/runs/a", "federation": {"split": {}, "manifest": {}}}
    first = spec_at_site(spec, site, 0)["site"]["run_dir"]
    assert spec_at_site(dict(spec), site, 0)["site"]["run_dir"] == first
    assert spec_at_site({**spec, "run_dir": "/coordinator/runs/b"}, site, 0)["site"]["run_dir"] != (
        first
    )
    assert Path(first).parent == tmp_path / "work" / "runs"
    with pytest.raises(DataError, match="no split and manifest"):
        spec_at_site({"run_dir": "/x"}, site, 0)
