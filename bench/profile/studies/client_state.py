"""``bench profile --study client-state``: how much state a client keeps (memory and disk) and
what K clients need.
"""

from __future__ import annotations

import copy
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.backbone import build_unet
from bench.profile.env import environment
from bench.profile.memory import PeakMemory, current_rss
from bench.profile.steps import (
    synthetic_volumes,
    tensor_bytes,
)
from bench.profile.studies.engine_overhead import engine_config


def _serialized_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def client_state_study(
    config: dict,
    method: str = "fcl",
    *,
    clients: int = 100,
    run_round: bool = True,
    round_clients: int | None = None,
    round_size: int = 64,
    budget_gib: float = 24.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Per-client state of ``method`` with ``clients`` clients, and what the engine holds at once.

    Measures, at the config's model: the method's state split into shared and
    client-only tensors, the optimiser state after a step, the size of a
    client's state file, the payload of a full bank; then (``run_round``) runs
    two rounds of ``round_clients`` (default ``clients``) clients at
    ``round_size`` px with one local step, measuring the process's peak RSS
    growth and the work folder's size.
    """
    from bench.pretrain import PretrainTask
    from bench.registry import get_method

    cls = get_method(method)
    cfg = copy.deepcopy(config)
    torch.manual_seed(0)
    instance = cls(
        build_unet(cfg["model"], out_channels=1),
        cfg["pretrain"]["methods"].get(method, {}),
        num_clients=clients,
        client_id=0,
    )
    optimizer = torch.optim.Adam(instance.optimizer_parameters(), lr=1e-3)
    # One step so that Adam's moments exist.
    size = cfg["data"]["preprocess"]["size"]
    from bench.sampling import SliceStack

    stack = SliceStack(synthetic_volumes(4, 6, min(size, 64), 0), cfg["pretrain"]["partitions"])
    draws = torch.Generator().manual_seed(0)
    instance.begin_round(0, 1)
    loss = instance.training_step(stack.sample(2, draws, 0), draws)["loss"]
    loss.backward()
    optimizer.step()
    state = instance.state_dict()
    shared = instance.shared_state()
    local = instance.local_state()
    by_prefix: dict[str, int] = {}
    for key, value in state.items():
        prefix = key.split(".")[0]
        by_prefix[prefix] = by_prefix.get(prefix, 0) + tensor_bytes({key: value})
    file_bytes = _serialized_bytes({"method": state, "optimizer": optimizer.state_dict()})
    defaults = {**cls.defaults, **cfg["pretrain"]["methods"].get(method, {})}
    dim = defaults.get("projection_dim", 0)
    bank = defaults.get("bank_size", 0)
    full_payload = bank * (dim * 4 + 4) if getattr(cls, "exchanges_features", False) else 0
    report = {
        "environment": environment("cpu"),
        "method": method,
        "clients": clients,
        "model": cfg["model"],
        "state_bytes": tensor_bytes(state),
        "shared_bytes": tensor_bytes(shared),
        "local_bytes": tensor_bytes(local),
        "state_by_prefix": by_prefix,
        "optimizer_bytes": tensor_bytes(
            {
                f"{i}.{k}": v
                for i, s in optimizer.state_dict()["state"].items()
                for k, v in s.items()
                if isinstance(v, torch.Tensor)
            }
        ),
        "client_file_bytes": file_bytes,
        "client_files_kept": 2,
        "payload_bytes_full_bank": full_payload,
    }
    report["disk_bytes_all_clients"] = clients * report["client_files_kept"] * file_bytes
    report["memory_if_all_clients_live"] = clients * (
        report["state_bytes"] + report["optimizer_bytes"]
    )
    report["server_payload_bytes"] = clients * full_payload
    log(
        f"{method} with {clients} clients: state {report['state_bytes'] / 2**20:.1f} MiB "
        f"(shared {report['shared_bytes'] / 2**20:.1f}, client-only "
        f"{report['local_bytes'] / 2**20:.1f}), "
        f"optimiser {report['optimizer_bytes'] / 2**20:.1f} MiB, file {file_bytes / 2**20:.1f} MiB"
    )
    if run_round:
        k = round_clients or clients
        rcfg = engine_config(cfg, 2, 1, 2)
        rcfg["data"]["preprocess"]["size"] = round_size
        volumes = [synthetic_volumes(2, 6, round_size, seed=i) for i in range(k)]
        work = Path(tempfile.mkdtemp(prefix="bench-state-"))
        from bench.federated.engine import run_in_process

        task = PretrainTask(
            config=rcfg,
            method=method,
            seed=0,
            work_dir=work,
            client_volumes=volumes,
            spec={"kind": "pretrain", "method": method},
        )
        rss_before = current_rss()
        start = time.perf_counter()
        with PeakMemory("cpu") as peak:
            run_in_process(task)
        elapsed = time.perf_counter() - start
        files = [f for f in work.rglob("*") if f.is_file()]
        client_files = [f for f in files if "clients" in f.parts]
        report["round"] = {
            "clients": k,
            "rounds": 2,
            "image_size": round_size,
            "seconds": elapsed,
            "rss_before": rss_before,
            "peak_rss": peak.peak_bytes,
            "peak_rss_growth": peak.growth_bytes,
            "memory_kind": peak.kind,
            "work_dir_bytes": sum(f.stat().st_size for f in files),
            "client_file_bytes_mean": float(np.mean([f.stat().st_size for f in client_files]))
            if client_files
            else 0,
            "client_files": len(client_files),
        }
        shutil.rmtree(work, ignore_errors=True)
    budget = budget_gib * 2**30
    fits_live = report["memory_if_all_clients_live"] < budget
    lines = [
        f"{method}, {clients} clients, widths {cfg['model']['widths']}:",
        f"  per client: state {report['state_bytes'] / 2**20:.1f} MiB (shared "
        f"{report['shared_bytes'] / 2**20:.1f} MiB, "
        f"client-only {report['local_bytes'] / 2**20:.1f} MiB: "
        + ", ".join(
            f"{p} {b / 2**20:.1f}" for p, b in sorted(by_prefix.items(), key=lambda kv: -kv[1])
        )
        + f"), Adam moments {report['optimizer_bytes'] / 2**20:.1f} MiB, state file "
        f"{file_bytes / 2**20:.1f} MiB",
        (
            f"  all {clients} clients live in memory: "
            f"{report['memory_if_all_clients_live'] / 2**30:.2f} GiB "
            f"({'fits' if fits_live else 'does not fit'} in {budget_gib:g} GiB); on disk (2 files "
            "each): "
            f"{report['disk_bytes_all_clients'] / 2**30:.2f} GiB; server-held payloads "
            f"{report['server_payload_bytes'] / 2**20:.1f} MiB"
        ),
    ]
    if run_round:
        r = report["round"]
        lines.append(
            f"  measured: {r['clients']} clients x 2 rounds at {r['image_size']} px: peak RSS "
            "growth "
            f"{r['peak_rss_growth'] / 2**20:.0f} MiB (process peak {r['peak_rss'] / 2**30:.2f} "
            "GiB), work folder "
            f"{r['work_dir_bytes'] / 2**30:.2f} GiB, {r['seconds']:.0f} s"
        )
    report["summary"] = "\n".join(lines)
    return report
