"""``bench site`` (a hospital's commands) and ``bench federation`` (the operator's).

Walk-through: docs/DEPLOYMENT.md. Heavy modules are imported when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.cli_help import add_command


def cmd_site_init(args) -> int:
    from bench.federated.site import init_site

    site = init_site(args.name, args.data, args.out, args.work)
    print(f"site {site.name}: config {site.folder / 'site.toml'}")
    print(f"send to the operator: {site.manifest} and {site.public_key}")
    print(f"keep here: {site.private_key} (the SuperNode's key)")
    return 0


def cmd_site_check(args) -> int:
    from bench.federated.site import check_site

    for line in check_site(args.site, args.ca):
        print(line)
    return 0


def cmd_site_start(args) -> int:
    import os
    import subprocess
    import time

    from bench.federated.loopback import stop_process_trees
    from bench.federated.site import read_site_config, site_commands
    from bench.federated.supernode import DEFAULT_POLL, POLL_ENV

    site = read_site_config(args.site)
    commands = site_commands(site, args.superlink, args.ca, args.partition, args.port)
    if args.print:
        for command in commands:
            print(" ".join(command))
        return 0
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ.setdefault(POLL_ENV, str(DEFAULT_POLL))
    processes = [subprocess.Popen(command) for command in commands]
    try:  # the SuperNode and its worker live and die together
        while all(process.poll() is None for process in processes):
            time.sleep(1)
    finally:
        for process in processes:
            stop_process_trees([process.pid])
    return processes[0].returncode or 0


def cmd_federation_start(args) -> int:
    from bench.federated.federation import start_federation

    federation = start_federation(args.out, args.site, args.host, args.port, args.bind)
    print(f"SuperLink on {federation.address} (log {federation.log_path})")
    for partition, site in enumerate(federation.manifest.sites):
        print(
            f"site {site['site']}: bench site start --site <its folder> --partition {partition} "
            f"--superlink {federation.address} --ca ca.crt"
        )
    print(f"give every site {federation.certs['ca_cert']}")
    return 0


def cmd_federation_stop(args) -> int:
    from bench.federated.federation import open_federation

    open_federation(args.federation).stop()
    return 0


def cmd_federation_status(args) -> int:
    from bench.federated.federation import open_federation

    print(open_federation(args.federation).status())
    return 0


def cmd_federation_submit(args, run_command: Callable[[Any], int]) -> int:
    from bench.federated.federation import open_federation

    federation = open_federation(args.federation)
    args.set = [*federation.run_overrides(), *args.set]
    return run_command(args)


def add_site_commands(
    commands, add_run_options: Callable[[Any], None], run_command: Callable[[Any], int]
) -> None:
    """Adds `bench site` and `bench federation`; the run options and `bench run` itself come
    from the caller, so that this module does not import bench.cli back."""
    site = add_command(
        commands,
        "site",
        summary="a federation site: init, check, start its SuperNode",
        description=(
            "A hospital's side of a federation (docs/DEPLOYMENT.md): its key pair, its "
            "data folder's manifest (patient ids, groups, content hashes; never an image), "
            "checks before training and its SuperNode."
        ),
        examples="""
            bench site init --name site0 --data /data/site0 --out /srv/bench-site
            bench site check --site /srv/bench-site --ca /srv/bench-site/ca.crt
            bench site start --site /srv/bench-site --partition 0 --superlink link:9092 --ca ca.crt
        """,
    )
    verbs = site.add_subparsers(dest="verb", required=True, metavar="VERB")
    init = add_command(
        verbs,
        "init",
        summary="keys, config and manifest of a new site",
        description=(
            "Writes the site's folder: site.toml (its name, data folder, work folder), its "
            "SuperNode key pair (keys/, private key mode 0600) and manifest.json (one entry "
            "per patient: id, subset, group, labeled, content hash). Send manifest.json and "
            "keys/<name>.pub to the operator."
        ),
        examples="bench site init --name site0 --data /data/site0 --out /srv/bench-site",
    )
    init.add_argument("--name", required=True, help="the site's name, e.g. site0")
    init.add_argument("--data", required=True, type=Path, help="the site's data folder")
    init.add_argument("--out", required=True, type=Path, help="the site's folder (made)")
    init.add_argument("--work", type=Path, help="folder for client states (default: <out>/work)")
    init.set_defaults(func=cmd_site_init)
    check = add_command(
        verbs,
        "check",
        summary="the data match the manifest; keys and CA valid",
        description=(
            "Checks that the site's data folder holds exactly the patients of its manifest, "
            "unchanged since enrollment, that its private key is mode 0600 and (with --ca) "
            "that the federation's CA certificate is valid now."
        ),
        examples="bench site check --site /srv/bench-site --ca /srv/bench-site/ca.crt",
    )
    check.add_argument("--site", required=True, type=Path, help="the site's folder")
    check.add_argument("--ca", type=Path, help="the federation's ca.crt")
    check.set_defaults(func=cmd_site_check)
    start = add_command(
        verbs,
        "start",
        summary="run the site's SuperNode (foreground)",
        description=(
            "Runs the site's SuperNode (its key, its site config and the partition the "
            "operator gave it) and its long-running ClientApp worker, which reads only the "
            "site's data folder and runs only bench's app (docs/DEPLOYMENT.md)."
        ),
        examples="bench site start --site /srv/bench-site --partition 0 --superlink link:9092 "
        "--ca ca.crt",
    )
    start.add_argument("--site", required=True, type=Path, help="the site's folder")
    start.add_argument(
        "--partition", required=True, type=int, help="the site's partition id (from the operator)"
    )
    start.add_argument("--superlink", required=True, help="the SuperLink's host:port")
    start.add_argument("--ca", required=True, type=Path, help="the federation's ca.crt")
    start.add_argument("--port", type=int, default=9094, help="the SuperNode's local port")
    start.add_argument("--print", action="store_true", help="print the command, run nothing")
    start.set_defaults(func=cmd_site_start)

    federation = add_command(
        commands,
        "federation",
        summary="the operator's commands: start the SuperLink, submit runs, status",
        description=(
            "The coordinator of a federation (docs/DEPLOYMENT.md) holds no image: it joins "
            "the sites' manifests, starts the SuperLink, registers the sites' keys and "
            "submits runs whose result rows are made from the metrics the sites send."
        ),
        examples="""
            bench federation start --out fed --site site0/ --site site1/ --host link.example.org
            bench federation submit --federation fed --methods fcl --preset tiny --out runs/fed
            bench federation status --federation fed
            bench federation stop --federation fed
        """,
    )
    verbs = federation.add_subparsers(dest="verb", required=True, metavar="VERB")
    fstart = add_command(
        verbs,
        "start",
        summary="certificates, manifest, SuperLink, enrolled sites",
        description=(
            "Joins the sites' manifests (in --site order: partition ids 0, 1, ...) into "
            "<out>/manifest.json, makes the TLS certificates (certs/), starts the SuperLink in "
            "the background (superlink.log, superlink.pid) and registers each site's key."
        ),
        examples="bench federation start --out fed --site from-site0/ --site from-site1/ "
        "--host link.example.org --port 9092",
    )
    fstart.add_argument("--out", required=True, type=Path, help="the federation's folder")
    fstart.add_argument(
        "--site",
        action="append",
        required=True,
        type=Path,
        help="a folder holding a site's manifest.json and <name>.pub, in partition order "
        "(repeat per site)",
    )
    fstart.add_argument(
        "--host",
        action="append",
        default=None,
        help="a name or IP the sites reach the SuperLink at (repeatable; default 127.0.0.1)",
    )
    fstart.add_argument("--port", type=int, default=0, help="Fleet API port (0: a free one)")
    fstart.add_argument(
        "--bind", default=None, help="address the SuperLink listens on (default: first --host)"
    )
    fstart.set_defaults(func=cmd_federation_start)
    for name, func, summary in (
        ("stop", cmd_federation_stop, "stop the SuperLink"),
        ("status", cmd_federation_status, "sites online and runs"),
    ):
        verb = add_command(
            verbs,
            name,
            summary=summary,
            description=f"{summary[0].upper()}{summary[1:]} of the federation in --federation.",
            examples=f"bench federation {name} --federation fed",
        )
        verb.add_argument(
            "--federation", required=True, type=Path, help="the folder of bench federation start"
        )
        verb.set_defaults(func=func)
    submit = add_command(
        verbs,
        "submit",
        summary="a bench run on the federation (bench run's options)",
        description=(
            "Runs bench run on the federation's sites: the split is made from the federation "
            "manifest, each task is a Flower run, and the result rows come from the metrics "
            "the sites send. Submitting again resumes."
        ),
        examples="bench federation submit --federation fed --methods fcl --preset tiny "
        "--out runs/fed",
    )
    submit.add_argument(
        "--federation", required=True, type=Path, help="the folder of bench federation start"
    )
    add_run_options(submit)
    submit.set_defaults(func=partial(cmd_federation_submit, run_command=run_command))
