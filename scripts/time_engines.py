"""Time per round of one federated pretraining task in-process, under Flower's simulation and on
loopback.

The task is the tiny preset's pretraining (widths 8-64 at 64 px, 5 local steps of
4 volumes x 4 partitions per client and round) on the synthetic volumes of
``bench.synthetic_tasks``, for two clients. Each engine runs it with 1 and with
``--rounds`` rounds from a fresh folder; the time per round is the difference
divided by the extra rounds, so start-up is left out of it and reported on its
own: a first, untimed one-round run on each engine (imports, first calls into
oneDNN, Ray's workers; on loopback the workers' imports of the model code), and
on loopback the start of the SuperLink and SuperNodes.
A second figure per round comes from the server's own record of the longer run
(``finished_at`` of each round in ``final.pt``'s history): the mean time between
the ends of its rounds, without start-up or the closing exchange.
The loopback federation is ``LocalFederation``'s: SuperLink behind the Fleet gateway,
SuperNodes in process isolation with one long-running ClientApp worker per site.
A deployment run counts as over when its ``final.pt`` appears (looked for every
0.05 s); the ``flwr`` CLI, whose every call starts a Python process that imports
Flower, is asked for the run's status only after that, so it takes no CPU from
the rounds.

Every process trains with one torch thread (``run.threads=1``), so pinning the
whole script to one core (``taskset -c 1``) compares the engines fairly.

    .venv/bin/python scripts/time_engines.py --method fcl --rounds 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.federated import simulation
from bench.federated.checkpoint import load_final
from bench.federated.deployment import write_app_dir
from bench.federated.engine import run_task
from bench.federated.jobs import write_job
from bench.federated.loopback import LocalFederation
from bench.synthetic_tasks import build_synthetic_task, synthetic_spec

SITES = 2
TINY_PRETRAINING = {
    "data": {"preprocess": {"size": 64}},
    "model": {"widths": [8, 16, 32, 64]},
    "pretrain": {"local_steps": 5, "volumes_per_batch": 4, "partitions": 4},
    "run": {"threads": 1},
}


def spec_for(root: Path, name: str, method: str, rounds: int, engine: str = "inprocess") -> dict:
    config = {
        **TINY_PRETRAINING,
        "pretrain": {**TINY_PRETRAINING["pretrain"], "rounds": rounds},
        "run": {**TINY_PRETRAINING["run"], "engine": engine, "flower": {"workers": SITES}},
    }
    return synthetic_spec(root / name, method, clients=SITES, volumes_per_client=6, config=config)


def round_ends(work_dir: Path) -> list[float]:
    """Wall-clock ends of a finished run's rounds, from the server's history."""
    return [entry["finished_at"] for entry in load_final(work_dir)["history"]]


def time_local(root: Path, method: str, rounds: int, engine: str) -> tuple[float, list[float]]:
    spec = spec_for(root, f"{engine}-{rounds}", method, rounds, engine)
    start = time.perf_counter()
    run_task(build_synthetic_task(spec), spec["config"]["run"])
    return time.perf_counter() - start, round_ends(Path(spec["work_dir"]))


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {timeout:g} s")
        time.sleep(0.05)


def time_deployment(
    root: Path, method: str, round_counts: list[int]
) -> tuple[dict[int, float], dict[int, list[float]], float]:
    start = time.perf_counter()
    with LocalFederation(root / "federation") as fed:
        fed.start_superlink()
        fed.start_sites(SITES, root / "keys")
        app = write_app_dir(root / "app")
        startup = time.perf_counter() - start
        times, ends = {}, {}
        # The first run is untimed, as in-process: the workers import the model code then.
        for name, rounds in [("warm-up", 1), *((str(r), r) for r in round_counts)]:
            spec = spec_for(root, f"deployment-{name}", method, rounds)
            work_dir = Path(spec["work_dir"])
            job = write_job(work_dir / "job.json", spec)
            begin = time.perf_counter()
            run_id = fed.submit(app, job)
            wait_for_file(work_dir / "server" / "final.pt", timeout=1800)
            took = time.perf_counter() - begin
            status = fed.wait_run(run_id, timeout=600)
            if status != "finished:completed":
                raise RuntimeError(
                    f"deployment run with {rounds} rounds ended "
                    f"{status}:\n{fed.log('superlink')[-3000:]}"
                )
            if name == "warm-up":
                startup += took
            else:
                times[rounds], ends[rounds] = took, round_ends(work_dir)
    return times, ends, startup


def per_round(times: dict[int, float]) -> tuple[float, float]:
    """(seconds per round, seconds outside the rounds) from runs with different round counts."""
    (few, t_few), (many, t_many) = sorted(times.items())
    round_s = (t_many - t_few) / (many - few)
    return round_s, t_few - few * round_s


def mean_round(ends: list[float]) -> float | None:
    """Mean time between the ends of consecutive rounds (None for a one-round run)."""
    return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="fcl")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="inprocess,flower,deployment")
    parser.add_argument("--out", help="JSON file for the figures")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as run.threads=1 does in every process of the engines
    counts = [1, args.rounds]
    root = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    report = {}
    for engine in args.engines.split(","):
        if engine == "deployment":
            times, ends, startup = time_deployment(root / engine, args.method, counts)
            extra = {"federation_start_and_warm_up_s": startup}
        else:
            warm_up, _ = time_local(root / f"{engine}-warm-up", args.method, 1, engine)
            extra = {"warm_up_s": warm_up}
            timed = {
                rounds: time_local(root / engine, args.method, rounds, engine) for rounds in counts
            }
            times = {rounds: run_s for rounds, (run_s, _) in timed.items()}
            ends = {rounds: run_ends for rounds, (_, run_ends) in timed.items()}
            if engine == "flower":
                simulation.shutdown_ray()
        round_s, outside_s = per_round(times)
        recorded = mean_round(ends[max(counts)]) or float("nan")
        report[engine] = {
            "run_s": times,
            "per_round_s": round_s,
            "outside_rounds_s": outside_s,
            "per_round_recorded_s": recorded,
            **extra,
        }
        print(
            f"{engine}: {round_s:.2f} s per round, {outside_s:.1f} s outside the rounds; "
            f"{recorded:.2f} s per round between the ends of rounds (the server's record) "
            f"(runs: {', '.join(f'{r} rounds {t:.1f} s' for r, t in times.items())})"
            + "".join(f"; {key} {value:.1f}" for key, value in extra.items()),
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"method": args.method, "clients": SITES, **report}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
