"""Flower's deployment runtime: the app folder, certificates and keys, and the commands to run.

One host runs ``flower-superlink`` (and the ServerApp it launches); each site
runs one ``flower-supernode`` with its own ``partition-id`` and job file. See
docs/DEPLOYMENT.md. ``python -m bench.federated.deployment --help`` writes the
app folder, the TLS certificates and the SuperNode keys.
"""

from __future__ import annotations

from pathlib import Path

APP_PYPROJECT = """# The Flower app: bench's ClientApp and ServerApp, for `flwr run` against a SuperLink.
# The app holds no code: every host (SuperLink and each site's SuperNode) must have the
# bench-fedssl package installed, and runs with runtime dependency installation off.
# See docs/DEPLOYMENT.md.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "bench-fedssl-app"
version = "0.1.0"
description = "bench: federated self-supervised pretraining and fine-tuning (ClientApp and ServerApp)"
license = "Apache-2.0"
dependencies = ["flwr==1.41.0"]

[tool.flwr.app]
publisher = "bench"

[tool.flwr.app.components]
serverapp = "bench.federated.apps:server_app"
clientapp = "bench.federated.apps:client_app"

[tool.flwr.app.config]
# The job file (JSON) the runner wrote: task kind, config, run folder. A site may
# point at its own copy with its SuperNode's node config `job`.
job = ""
"""


def write_app_dir(folder: Path) -> Path:
    """A Flower app folder (only ``pyproject.toml``: the apps come from the installed bench)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "pyproject.toml"
    if not target.exists() or target.read_text() != APP_PYPROJECT:
        target.write_text(APP_PYPROJECT)
    return folder
