"""The profile's measuring instruments: FLOP formulas, timers, peak memory, device paths.

CUDA-only paths (synchronize, max_memory_allocated, out-of-memory retry) run
here through their CPU equivalents or with the CUDA calls replaced by fakes;
bf16 autocast and channels_last run on the CPU as they are. No wall-clock asserts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from bench.backbone import UNet2D, build_unet, instance_to_group_norm
from bench.config import load_config
from bench.profile import memory as memory_module
from bench.profile.flops import (
    conv2d_flops,
    conv_out_size,
    count_flops,
    flops_by_operator,
    linear_flops,
)
from bench.profile.memory import PeakMemory
from bench.profile.steps import StepResult, with_oom_retry
from bench.profile.timing import Timer, matmul_peak, summarize, synchronizer

# ---------------------------------------------------------------- FLOPs


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "padding", "groups"),
    [(3, 8, 3, 1, 1, 1), (4, 6, 3, 2, 1, 1), (8, 8, 3, 1, 1, 4), (2, 5, 1, 1, 0, 1)],
)
def test_conv_flops_match_hand_formula(cin, cout, kernel, stride, padding, groups):
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups)
    x = torch.randn(2, cin, 12, 10)
    out_hw = (
        conv_out_size(12, kernel, stride, padding),
        conv_out_size(10, kernel, stride, padding),
    )
    forward = conv2d_flops(2, cin, cout, (kernel, kernel), out_hw, groups)
    assert forward == 2 * 2 * cout * out_hw[0] * out_hw[1] * (cin // groups) * kernel * kernel
    flops, out = count_flops(lambda: conv(x))
    assert out.shape[-2:] == out_hw
    assert flops == forward
    if groups > 1:
        return  # torch's counter does not divide grouped convolutions' backward by the groups
    # Backward: the weight gradient costs one forward; the input gradient another when needed.
    assert count_flops(lambda: conv(x).sum().backward())[0] == 2 * forward
    x_grad = x.clone().requires_grad_()
    assert count_flops(lambda: conv(x_grad).sum().backward())[0] == 3 * forward


def test_linear_flops_match_hand_formula():
    layer = nn.Linear(32, 24)
    x = torch.randn(5, 32)
    forward = linear_flops(5, 32, 24)
    assert forward == 2 * 5 * 32 * 24
    assert count_flops(lambda: layer(x))[0] == forward
    assert count_flops(lambda: layer(x).sum().backward())[0] == 2 * forward
    assert set(flops_by_operator(lambda: layer(x))) == {"addmm"}


def test_unet_forward_flops_are_the_sum_of_its_convolutions():
    model = UNet2D(out_channels=2, widths=(4, 8, 16))
    x = torch.randn(1, 1, 16, 16)
    expected = 0

    def hook(module, inputs, output):
        nonlocal expected
        if isinstance(module, nn.Conv2d):
            expected += conv2d_flops(
                1,
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                tuple(output.shape[-2:]),
                module.groups,
            )
        else:  # transposed convolution: 2 x input elements x out channels x kernel area
            expected += (
                2
                * inputs[0].numel()
                * module.out_channels
                * module.kernel_size[0]
                * module.kernel_size[1]
            )

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    flops, _ = count_flops(lambda: model(x))
    assert flops == expected


# ---------------------------------------------------------------- timing


def test_timer_synchronizes_around_every_section():
    calls = []
    ticks = iter(range(100))
    timer = Timer(synchronize=lambda: calls.append("sync"), clock=lambda: float(next(ticks)))
    with timer.section("forward"):
        calls.append("work")
    with timer.section("backward"):
        pass
    assert calls == ["sync", "work", "sync", "sync", "sync"]
    assert timer.samples == {"forward": [1.0], "backward": [1.0]}
    assert timer.total(["forward", "backward"]) == [2.0]
    times = timer.measure(lambda: None, name="step", warmup=2, repeats=3)
    assert len(times) == 3 and timer.sync_calls == 4 + 2 + 6


def test_synchronizer_is_a_noop_on_cpu_and_cuda_synchronize_on_cuda(monkeypatch):
    assert synchronizer("cpu")() is None
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    synchronizer("cuda")()
    assert seen == [torch.device("cuda")]


def test_matmul_peak_is_the_best_repeat_and_synchronizes():
    calls = []
    peak = matmul_peak("cpu", size=64, repeats=3, synchronize=lambda: calls.append(1))
    assert peak["flops"] == 2 * 64**3
    assert peak["flops_per_s"] == pytest.approx(peak["flops"] / peak["best_s"])
    assert peak["best_s"] <= peak["median_s"]
    assert len(calls) == 1 + 2 * 3


def test_summary_median_and_iqr():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.q1 == 2.0 and s.q3 == 4.0 and s.iqr == 2.0
    assert s.min == 1.0 and s.max == 100.0 and s.n == 5


# ---------------------------------------------------------------- memory


# Measured in a fresh process: in a long test session a new block can reuse memory that
# earlier tests freed but the allocator kept resident, and then the RSS does not grow.
PEAK_PROBE = """
import sys, time, torch
from bench.profile.memory import PeakMemory
size, sampling = int(sys.argv[1]), sys.argv[2] == "sampling"
options = {"force_sampling": True, "interval": 0.001} if sampling else {}
with PeakMemory("cpu", **options) as peak:
    block = torch.ones(size // 4)  # float32: written, so resident
    time.sleep(0.05 if sampling else 0)
    del block
print(peak.kind, peak.growth_bytes)
"""


def _peak_in_fresh_process(size: int, mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, str(size), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    kind, growth = out.stdout.split()
    return kind, int(growth)


def test_cpu_peak_memory_sees_a_temporary_allocation():
    size = 64 * 2**20
    kind, growth = _peak_in_fresh_process(size, "default")
    assert kind in {"rss_hwm", "rss_sampled"}
    assert growth >= 0.9 * size


def test_cpu_peak_memory_sampling_path():
    size = 48 * 2**20
    kind, growth = _peak_in_fresh_process(size, "sampling")
    assert kind == "rss_sampled"
    assert growth >= 0.9 * size


def test_cuda_peak_memory_path_reads_the_allocator(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(
        torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset")
    )
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5000)
    with PeakMemory("cuda") as peak:
        calls.append("work")
    assert calls == ["sync", "reset", "work", "sync"]
    assert (peak.kind, peak.peak_bytes, peak.growth_bytes) == ("cuda_max_allocated", 5000, 4000)


def test_lifetime_peak_is_in_bytes():
    assert memory_module.lifetime_peak_rss() >= memory_module.current_rss() // 2 > 0


# ---------------------------------------------------------------- device paths on CPU


def test_oom_retry_halves_the_batch_on_cuda_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    tried, said = [], []

    def run(batch):
        tried.append(batch)
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return StepResult("pretrain", "m", batch, {}, [1.0])

    result = with_oom_retry(run, 32, "cuda", log=said.append)
    assert tried == [32, 16, 8] and result.batch == 8
    assert len(result.notes) == 2 and "retried with batch 16" in result.notes[0]
    assert said == result.notes
    with pytest.raises(torch.OutOfMemoryError):
        with_oom_retry(run, 32, "cpu", log=said.append)


def test_bf16_autocast_runs_on_cpu():
    from bench.device import DeviceSettings

    device = DeviceSettings({"device": "cpu", "amp": "bf16", "channels_last": False})
    model = UNet2D(out_channels=2, widths=(4, 8))
    with device.autocast():
        out = model(torch.randn(2, 1, 16, 16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_channels_last_on_cpu():
    from bench.device import DeviceSettings

    device = DeviceSettings({"device": "cpu", "amp": "none", "channels_last": True})
    model = device.module(UNet2D(out_channels=2, widths=(4, 8)))
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    batch = device.batch(
        {"image": torch.randn(2, 1, 16, 16), "partition": torch.zeros(2, dtype=torch.long)}
    )
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert model(batch["image"]).shape == (2, 2, 16, 16)


def test_group_norm_swap_computes_the_same_function_with_the_same_state_keys():
    torch.manual_seed(0)
    model = UNet2D(out_channels=3, widths=(4, 8, 16))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    keys = list(model.state_dict())
    x = torch.randn(3, 1, 32, 32)
    before = model(x)
    replaced = instance_to_group_norm(model)
    assert replaced == sum(1 for m in model.modules() if isinstance(m, nn.GroupNorm)) > 0
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in model.modules())
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)


def test_training_builds_the_configured_norm_kernel():
    config = {"widths": [4, 8, 16], "norm": "instance"}
    native = build_unet({**config, "norm_kernel": "native"}, out_channels=2)
    group = build_unet({**config, "norm_kernel": "group"}, out_channels=2)
    assert any(isinstance(m, nn.InstanceNorm2d) for m in native.modules())
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in group.modules())
    assert list(group.state_dict()) == list(native.state_dict())
    assert load_config("tiny")["model"]["norm_kernel"] == "group"


def test_contention_reports_thread_time_and_others_share():
    from bench.profile.timing import Contention, thread_run_seconds

    a = torch.randn(256, 256)
    with Contention() as load:
        for _ in range(20):
            a @ a
    assert load.wall_s > 0 and load.cpu_s >= 0
    assert (
        0.0 <= load.others_share <= 1.0 or load.others_share != load.others_share
    )  # NaN off Linux
    if thread_run_seconds():
        assert 0 < load.busiest_thread_s <= load.cpu_s + 0.05
    assert load.involuntary_switches >= 0


def test_contention_share_stays_a_share_when_ticks_overshoot(monkeypatch):
    """/proc/stat counts 10 ms ticks: over a short block on a loaded machine the busy
    seconds can exceed wall time x CPUs; the share is still at most 1."""
    from bench.profile import timing

    readings = iter([(100.0, 2), (100.5, 2)])  # 0.5 s busy during a block of a few ms
    monkeypatch.setattr(timing, "_system_busy_seconds", lambda: next(readings))
    with timing.Contention() as load:
        pass
    assert load.others_share == 1.0


def test_allocator_tuning_is_reported(monkeypatch):
    import sys

    from bench import allocator

    settings = allocator.allocator_settings()
    assert {"malloc_tuned", "malloc_env", "preloaded_allocator", "omp_wait_policy"} <= set(settings)
    monkeypatch.setattr(allocator, "_TUNED", None)
    # Values equal to glibc's defaults, so the rest of the session is unaffected.
    applied = allocator.tune_cpu_allocator(
        mmap_threshold=128 * 1024, trim_threshold=128 * 1024, top_pad=0
    )
    if sys.platform.startswith("linux") and applied is not None:
        assert applied == {"mmap_threshold": 128 * 1024, "trim_threshold": 128 * 1024, "top_pad": 0}
        assert allocator.allocator_settings()["malloc_tuned"] == applied


def test_training_applies_the_allocator_setting_from_the_config(monkeypatch):
    import bench.device

    calls = []
    monkeypatch.setattr(bench.device, "tune_cpu_allocator", lambda: calls.append(1))
    run_cfg = {"device": "cpu", "amp": "none", "channels_last": False}
    bench.device.DeviceSettings({**run_cfg, "tune_malloc": False})
    assert calls == []
    bench.device.DeviceSettings({**run_cfg, "tune_malloc": True})
    assert calls == [1]
