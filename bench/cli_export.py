"""`bench export`: a run's pretrained weights as one stand-alone safetensors file."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.cli_help import add_command
from bench.datasets.errors import DataError


def cmd_export(args) -> int:
    from bench.weights import export_weights, pretrained_path

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.yaml)")
    source = pretrained_path(run_dir, args.method, args.seed)
    if not source.is_file():
        have = sorted(p.name for p in (run_dir / "pretrained").glob("*.safetensors"))
        raise FileNotFoundError(
            f"{source}: no pretrained {args.method} (seed {args.seed}) in this run "
            f"(it has: {', '.join(have) or 'none'}; random init has no pretrained weights)"
        )
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DataError(out, "--out: the file name must end in .safetensors")
    written, meta = export_weights(source, out, client=args.client)
    print(
        f"{written}  ({meta['method']}, parts from client {meta['client']}; sidecar "
        f"{written.with_suffix('.json').name})",
        file=sys.stderr,
    )
    return 0


def add_export_command(subparsers) -> None:
    export = add_command(
        subparsers,
        "export",
        summary="write a method's pretrained weights as a shareable safetensors file",
        description=(
            "Writes the pretrained U-Net parts of one method of a run folder (the federated "
            "model; after local pretraining, the client named by --client) to a safetensors "
            "file with a JSON sidecar (docs/FORMATS.md). Load it with "
            "bench.load_pretrained(path) for fine-tuning in plain PyTorch or MONAI "
            "(docs/API.md)."
        ),
        examples="""
            bench export runs/tiny --method fcl --out fcl-encoder.safetensors
            bench export runs/local --method simclr --seed 1 --client 3 --out simclr-c3.safetensors
        """,
    )
    export.add_argument("run_dir", metavar="RUN", help="a run folder made by `bench run`")
    export.add_argument(
        "--method", required=True, help="the pretrained method to export; e.g. --method fcl"
    )
    export.add_argument(
        "--seed", type=int, default=0, help="which seed's pretraining (default 0); e.g. --seed 1"
    )
    export.add_argument(
        "--client",
        type=int,
        help="whose weights when the clients' differ (local pretraining); e.g. --client 0",
    )
    export.add_argument(
        "--out", required=True, help="file to write (*.safetensors); e.g. --out fcl.safetensors"
    )
    export.set_defaults(func=cmd_export)
