"""The environment a profile was measured in, stamped on every output file."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ISA extensions that decide which oneDNN/MKL kernels run (x86 /proc/cpuinfo names).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_flags() -> list[str]:
    """The ``ISA_FLAGS`` this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in present]
    except OSError:
        pass
    return []


def thread_placement() -> dict:
    """Where the threads may run: affinity, SMT, and the OpenMP placement variables."""
    read = lambda path: Path(path).read_text().strip() if Path(path).exists() else None  # noqa: E731
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    placement = {
        "cpu_affinity_list": affinity,
        "smt_active": read("/sys/devices/system/cpu/smt/active"),
        "numa_nodes": len(list(Path("/sys/devices/system/node").glob("node[0-9]*")))
        if Path("/sys/devices/system/node").is_dir()
        else None,
    }
    for name in (
        "OMP_NUM_THREADS",
        "OMP_PROC_BIND",
        "OMP_PLACES",
        "GOMP_CPU_AFFINITY",
        "KMP_AFFINITY",
        "MKL_NUM_THREADS",
        "ONEDNN_MAX_CPU_ISA",
        "DNNL_MAX_CPU_ISA",
    ):
        placement[name.lower()] = os.environ.get(name)
    return placement


def memory_bandwidth(elements: int = 1 << 24, repeats: int = 5) -> float:
    """Bytes/s of a STREAM-like triad ``a = b + s * c`` over float32 arrays (64 MiB each by
    default, far beyond the caches), best of ``repeats``, with torch's threads; STREAM's
    convention: 3 arrays x 4 bytes per element moved."""
    import time

    b, c = torch.rand(elements), torch.rand(elements)
    a = torch.empty(elements)
    torch.add(b, c, alpha=3.0, out=a)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best = min(best, time.perf_counter() - start)
    return 3 * 4 * elements / best


def onednn_kernels() -> dict:
    """The oneDNN ISA and the convolution/matmul implementations it picks here, from
    ``ONEDNN_VERBOSE`` output of one small training convolution (forward and backward)."""
    import re
    import tempfile

    if not torch.backends.mkldnn.is_available():
        return {"onednn_isa": None, "onednn_kernels": []}
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as captured:
        sys_stdout = os.dup(1)
        try:
            import sys

            sys.stdout.flush()
            os.dup2(captured.fileno(), 1)
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                x = torch.rand(2, 16, 32, 32, requires_grad=True)
                conv = torch.nn.Conv2d(16, 16, 3, padding=1)
                conv(x).sum().backward()
        finally:
            os.dup2(sys_stdout, 1)
            os.close(sys_stdout)
        captured.seek(0)
        lines = captured.read().splitlines()
    isa = next((m.group(1) for line in lines if (m := re.search(r",isa:(.*)", line))), None)
    version = next(
        (m.group(1) for line in lines if (m := re.search(r"oneDNN v([0-9.]+)", line))), None
    )
    kernels = []
    for line in lines:
        parts = line.split(",")
        if "exec" in parts[:4] and len(parts) > parts.index("exec") + 4:
            at = parts.index("exec")  # exec, engine, primitive kind, implementation, prop kind
            entry = f"{parts[at + 2]} {parts[at + 4]}: {parts[at + 3]}"
            if entry not in kernels:
                kernels.append(entry)
    return {"onednn_isa": isa, "onednn_version": version, "onednn_kernels": kernels}


def math_libraries() -> dict:
    """BLAS/oneDNN versions torch was built with (``torch.__config__.show()``)."""
    import re

    text = torch.__config__.show()
    found = {}
    for key, pattern in (
        ("mkl_version", r"Math Kernel Library Version ([^\n]+)"),
        ("blas", r"BLAS_INFO=([a-z0-9_]+)"),
    ):
        match = re.search(pattern, text)
        found[key] = match.group(1).strip() if match else None
    return found


def machine_profile() -> dict:
    """What explains a step's share of the peak on a CPU: ISA, kernels, placement, bandwidth."""
    info = {"cpu_flags": cpu_flags(), **thread_placement(), **math_libraries()}
    info["memory_bandwidth_bytes_per_s"] = memory_bandwidth()
    try:
        info.update(onednn_kernels())
    except Exception as error:  # noqa: BLE001 - informative only
        info.update(onednn_isa=None, onednn_kernels=[f"not captured: {error}"])
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(device: torch.device | str = "cpu") -> dict:
    from bench.provenance import code_version, library_versions

    device = torch.device(device)
    info = {
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": load_average(),
        "code_version": code_version(),
        "libraries": library_versions(),
        "device": str(device),
    }
    from bench.allocator import allocator_settings

    info.update(allocator_settings())
    info.update(machine_profile())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=torch.cuda.get_device_name(device),
            device_memory_bytes=int(props.total_memory),
            device_capability=f"{props.major}.{props.minor}",
            cuda_runtime=torch.version.cuda,
            driver=_nvidia_driver(),
        )
    else:
        info["device_name"] = info["cpu_model"]
    return info


def _nvidia_driver() -> str | None:
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return (
            out.stdout.strip().splitlines()[0]
            if out.returncode == 0 and out.stdout.strip()
            else None
        )
    except Exception:  # optional information
        return None
