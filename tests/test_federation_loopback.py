"""The walk-through of docs/DEPLOYMENT.md ("A federation of sites"), step by step, on loopback.

Three sites whose data folders are disjoint (each holds only its patients) run
real SuperNodes; the coordinator holds no image. The run's rows equal those of
one process on the whole folder with the same split and seed. Kept as small as a
run can be (one pretraining round, one fine-tuning round, one mode): each
message starts a ClientApp process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.datasets.synthetic import write_synthetic
from bench.federated.federation import open_federation
from bench.federated.loopback import (
    flower_env,
    free_port,
    split_folder_into_sites,
    stop_process_trees,
    wait_for,
)
from bench.results import ResultStore

HAS_SUPERLINK = (Path(sys.executable).parent / "flower-superlink").exists()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_SUPERLINK, reason="flower-superlink is not installed"),
]

SITES = 3
SETTINGS = [
    "data.preprocess.size=32",
    "model.widths=[4,8,16]",
    "pretrain.rounds=1",
    "pretrain.local_steps=1",
    "pretrain.volumes_per_batch=2",
    "finetune.rounds=1",
    "finetune.local_steps=1",
    "finetune.batch_size=2",
    "finetune.modes=[federated]",
    "split.n_values=[1]",
    "split.val_per_client=0",  # no validation round-trip: one message fewer per round
    "run.threads=1",
    "run.tracker=none",
]


def _rows(run_dir: Path) -> pd.DataFrame:
    key = ["client", "patient", "phase", "class_name"]
    rows = ResultStore(run_dir).load().drop(columns=["config_hash"])
    return rows.sort_values(key).reset_index(drop=True)


def _status(federation) -> str:
    """``bench federation status``'s text; empty while the ``flwr`` CLI is too slow to answer
    (seconds of CPU per call: on a loaded machine it can miss its timeout)."""
    try:
        return federation.status()
    except subprocess.TimeoutExpired:
        return ""


def test_three_sites_with_disjoint_folders_give_the_rows_of_one_process(tmp_path):
    full = tmp_path / "full"
    write_synthetic(full, "acdc", 9, 3, seed=0)
    data = split_folder_into_sites(full, tmp_path, SITES)
    sites = [tmp_path / f"site{k}" for k in range(SITES)]
    federation_dir = tmp_path / "fed"
    processes = []
    try:
        # 1. Each site: keys, config, manifest (sent to the operator with the public key).
        for k, site in enumerate(sites):
            assert main(["site", "init", "--name", f"site{k}", "--data", str(data[k]),
                         "--out", str(site)]) == 0  # fmt: skip
        # 2. The operator: manifest, certificates, SuperLink, enrolled keys.
        site_args = [arg for site in sites for arg in ("--site", str(site))]
        assert main(["federation", "start", "--out", str(federation_dir), *site_args]) == 0
        federation = open_federation(federation_dir)
        ca = federation.certs["ca_cert"]
        # 3. Each site checks its data, key and the CA it received, then starts its SuperNode.
        for k, site in enumerate(sites):
            assert main(["site", "check", "--site", str(site), "--ca", str(ca)]) == 0
            env = flower_env(tmp_path / f"flwr-home-site{k}")
            env["BENCH_CACHE_DIR"] = str(site / "cache")  # preprocessing cached at the site
            log = (tmp_path / f"site{k}.log").open("ab")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.cli",
                        "site",
                        "start",
                        "--site",
                        str(site),
                        "--partition",
                        str(k),
                        "--superlink",
                        federation.address,
                        "--ca",
                        str(ca),
                        "--port",
                        str(free_port()),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )  # fmt: skip
            )
        wait_for(
            lambda: f"{SITES} of {SITES} sites online" in _status(federation),
            240,
            "the sites to connect",
            describe=lambda: (tmp_path / "site0.log").read_text(errors="replace")[-2000:],
            poll=5.0,
        )
        # 4. The operator submits a run; the rows come from the sites' metrics.
        settings = [arg for setting in SETTINGS for arg in ("--set", setting)]
        run_dir = tmp_path / "run"
        assert main(["federation", "submit", "--federation", str(federation_dir),
                     "--methods", "fcl", "--preset", "tiny", "--out", str(run_dir),
                     *settings, "-q"]) == 0  # fmt: skip
    finally:
        for process in processes:
            stop_process_trees([process.pid])
        if (federation_dir / "superlink.pid").exists():
            assert main(["federation", "stop", "--federation", str(federation_dir)]) == 0
    assert not (run_dir / "data").exists()  # the coordinator read no image
    for k, site in enumerate(sites):
        cached = list((site / "cache").rglob("*.npz"))
        assert cached, f"site {k} preprocessed nothing"
    reference = tmp_path / "reference"
    assert main(["run", "--methods", "fcl", "--preset", "tiny", "--out", str(reference),
                 "--data", str(full), "--split", str(run_dir / "split.json"),
                 *settings, "-q"]) == 0  # fmt: skip
    federated, expected = _rows(run_dir), _rows(reference)
    assert len(expected) > 0 and set(federated["client"]) == set(range(SITES))
    pd.testing.assert_frame_equal(federated, expected)
