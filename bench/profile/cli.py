"""The ``bench profile`` command: ``add_profile_command(subparsers)`` joins it to ``bench``'s
CLI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STUDIES = ("unet", "unet-ab", "engine", "client-state", "reference")


def add_profile_command(subparsers) -> argparse.ArgumentParser:
    from bench.cli_help import with_examples
    from bench.config import available_presets

    parser = subparsers.add_parser(
        "profile",
        help=(
            "throughput, step-time split, FLOP/s, memory and bytes per round of each method's step"
        ),
        description=(
            "Times each method's pretraining step (forward, backward, optimizer, momentum update, "
            "payload exchange), the fine-tuning step, inference and the samplers; counts FLOPs; "
            "compares with the fp32 matmul peak measured in the same run. Writes CSV and JSON to "
            "--out and prints a table."
        ),
        **with_examples("""
            bench profile --methods all --preset tiny
            bench profile --methods fcl,byol --preset default --device cuda --amp bf16
            bench profile --run runs/tiny
            bench profile --study unet-ab --preset default
        """),
    )
    parser.add_argument(
        "--methods", default="all", help="comma-separated method names, or 'all' (default)"
    )
    parser.add_argument(
        "--preset",
        default="tiny",
        choices=[*available_presets(), "default"],
        help="config preset whose model, image size and batch are profiled "
        "('default': the unmodified defaults, the U-Net at 192 x 192)",
    )
    parser.add_argument(
        "--run", help="a run folder: profile its config.yaml, write to <run>/profile/"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: the config's run.device"
    )
    parser.add_argument(
        "--batch", type=int, help="slices per step (pretraining: rounded to whole volumes)"
    )
    parser.add_argument("--size", type=int, help="image side in pixels (data.preprocess.size)")
    parser.add_argument(
        "--amp", choices=["none", "bf16"], help="autocast (default: the config's run.amp)"
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="channels_last memory format for model and batches",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile each U-Net block")
    parser.add_argument(
        "--norm-impl",
        choices=["native", "group"],
        help="'group': run InstanceNorm2d as the identical GroupNorm(C, C) (faster on CPU); "
        "default: the config's model.norm_kernel, as training does",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: the config's run.threads)"
    )
    parser.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep freed memory in glibc's heap (mallopt) instead of unmapping it after "
        "every step: no page faults per step on CPU (see docs/PERFORMANCE.md); "
        "default: the config's run.tune_malloc, as training does",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps before timing (default 1)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument(
        "--phases",
        default="pretrain,finetune,inference,data",
        help="which of pretrain,finetune,inference,data to profile",
    )
    parser.add_argument(
        "--matmul-size",
        type=int,
        help="side of the peak-FLOP/s matmul (default 2048 CPU, 8192 CUDA)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config option"
    )
    parser.add_argument(
        "--out", help="output folder (default: runs/profile-<preset>, or <run>/profile)"
    )
    parser.add_argument(
        "--study",
        choices=STUDIES,
        help="instead of the profile, run a study of docs/PERFORMANCE.md: 'unet' (what "
        "lowers the U-Net's FLOP/s), 'unet-ab' (the recommended settings interleaved), 'engine' "
        "(federated engine overhead), "
        "'client-state' (per-client state size, many clients), 'reference' (bench's SimCLR, BYOL, "
        "MoCo, FCL and GCL steps against plain lightly-style loops, interleaved)",
    )
    parser.add_argument(
        "--clients", type=int, help="--study engine/client-state: number of clients"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar="JSON",
        help="print two profiles' machines (ISA, kernels, placement, bandwidth, allocator) and "
        "steps side by side, line by line; measures nothing",
    )
    parser.set_defaults(func=cmd_profile)
    return parser


def _config(args):
    import yaml

    from bench.config import load_config, merge, validate

    overrides = list(args.set)
    if args.size is not None:
        overrides.append(f"data.preprocess.size={args.size}")
    if args.device is not None:
        overrides.append(f"run.device={args.device}")
    if args.threads is not None:
        overrides.append(f"run.threads={args.threads}")
    preset = None if args.preset == "default" else args.preset
    if args.run:
        saved = Path(args.run) / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"{saved}: not a run folder (no config.yaml)")
        config = yaml.safe_load(saved.read_text())
        from bench.config import parse_override

        for text in overrides:
            config = merge(config, parse_override(text))
        validate(config)
        return config, config.get("preset")
    return load_config(preset, overrides), args.preset


def cmd_profile(args) -> int:
    if args.compare:
        from bench.profile.compare import compare_profiles

        for path in args.compare:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--compare {path}: no such profile JSON")
        print(compare_profiles(*args.compare))
        return 0
    from bench.profile.core import format_table, run_profile
    from bench.profile.records import profile_folder
    from bench.profile.steps import StepSettings
    from bench.registry import resolve_method_names

    config, preset = _config(args)
    norm_impl = args.norm_impl or config["model"].get("norm_kernel", "native")
    # The U-Net studies' variants are relative to torch's kernel; everything else builds what it
    # profiles.
    config["model"]["norm_kernel"] = "native" if args.study in ("unet", "unet-ab") else norm_impl
    if config["run"].get("tune_malloc", False) if args.tune_malloc is None else args.tune_malloc:
        from bench.allocator import tune_cpu_allocator

        if tune_cpu_allocator() is None:
            print("bench profile: --tune-malloc needs Linux with glibc; ignored", file=sys.stderr)
    run_cfg = config["run"]
    settings = StepSettings(
        device=run_cfg["device"],
        amp=args.amp or run_cfg["amp"],
        channels_last=run_cfg["channels_last"] if args.channels_last is None else True,
        compile=args.compile,
        norm_impl=norm_impl,
        warmup=max(args.warmup, 2 if args.compile else 0),
        repeats=args.repeats,
    )
    out = (
        Path(args.out)
        if args.out
        else (profile_folder(args.run) if args.run else Path("runs") / f"profile-{preset}")
    )
    if args.study:
        return _study(args, config, settings, out)
    methods = resolve_method_names(args.methods)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(phases) - {"pretrain", "finetune", "inference", "data"}
    if unknown:
        print(f"bench profile: unknown phase(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    result = run_profile(
        methods,
        config,
        settings,
        phases=phases,
        batch=args.batch,
        preset=preset,
        matmul_size=args.matmul_size,
    )
    files = result.write(out)
    print(format_table(result.frame))
    peak = result.matmul["peak_flops_per_s"]
    thread_peak = result.matmul.get("peak_thread_flops_per_s", float("nan"))
    print(
        f"\nfp32 matmul peak: {peak / 1e9:.1f} GFLOP/s wall, {thread_peak / 1e9:.1f} GFLOP/s by "
        "busiest-thread "
        "time (best of before/after); "
        f"{result.environment['device_name']}, {result.settings['threads']} threads, torch "
        f"{result.environment['torch']}, CUDA {result.environment['cuda_build']}"
    )
    notes = [n for n in result.frame.note if isinstance(n, str) and "out of memory" in n]
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _study(args, config, settings, out: Path) -> int:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if config["run"]["threads"]:
        torch.set_num_threads(int(config["run"]["threads"]))
    if args.study == "unet":
        from bench.profile.studies.unet import unet_study

        report = unet_study(config, settings, batch=args.batch, repeats=args.repeats)
    elif args.study == "unet-ab":
        from bench.profile.studies.unet_ab import unet_ab_study

        report = unet_ab_study(config, batch=args.batch, rounds=args.repeats, log=lambda text: None)
    elif args.study == "engine":
        from bench.profile.studies.engine_overhead import engine_overhead_study

        report = engine_overhead_study(
            config, args.methods if args.methods != "all" else "simclr", clients=args.clients or 10
        )
    elif args.study == "reference":
        from bench.profile.studies.reference import REFERENCE_METHODS, reference_study

        methods = REFERENCE_METHODS if args.methods == "all" else args.methods.split(",")
        unknown = sorted(set(methods) - set(REFERENCE_METHODS))
        if unknown:
            print(
                f"bench: error: --methods: no reference loop for {', '.join(unknown)} "
                f"(--study reference has {', '.join(REFERENCE_METHODS)})",
                file=sys.stderr,
            )
            return 2
        report = reference_study(
            config,
            methods,
            batch=args.batch,
            repeats=args.repeats,
            warmup=args.warmup,
            log=lambda text: print(text, file=sys.stderr),
        )
    else:
        from bench.profile.studies.client_state import client_state_study

        report = client_state_study(
            config, args.methods if args.methods != "all" else "fcl", clients=args.clients or 100
        )
    path = out / f"study-{args.study}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(report.get("summary", ""))
    print(f"wrote {path}")
    return 0
