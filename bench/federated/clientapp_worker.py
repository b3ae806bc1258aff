"""A site's long-running ClientApp process, for a SuperNode in Flower's ``process`` isolation mode.

With ``flower-supernode --isolation subprocess`` (Flower's default) every message
starts a fresh ``flwr-clientapp`` process, which imports torch and bench and
rebuilds the task: seconds per message. With ``--isolation process`` the SuperNode
launches nothing; this worker takes its place. It asks the SuperNode's local
Runtime API for pending ClientApp tasks (``AcquireTask``, signed with the
SuperExec shared secret when one is set) and runs each one in this process, with
Flower's own task protocol (pull the input, heartbeat, push the reply and the
task output), so torch is imported once and the task is built once per job
(``bench.federated.jobs.task_for`` keeps it).

The worker also pins the app: it runs only bench's installed ``client_app``, and
only for a FAB that carries no code (``pyproject.toml`` and Flower's manifest)
and names bench's apps; any other FAB gets an error reply and nothing of it runs.

A supervisor process (``main``) restarts the worker when it dies (a ClientApp that
crashed the process, as ``os._exit`` would); the failed message is then reported by
the SuperNode as a ClientApp that stopped responding, as in subprocess mode.

    python -m bench.federated.clientapp_worker --runtime-api-address 127.0.0.1:9094 \
        --superexec-auth-secret-file secret
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
import tomllib
import zipfile
from typing import Any

from bench.federated.trace import event

PINNED_COMPONENTS = {
    "serverapp": "bench.federated.apps:server_app",
    "clientapp": "bench.federated.apps:client_app",
}
FAB_FILES = {"pyproject.toml", ".info/CONTENT"}
ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"


class AppNotPinned(RuntimeError):
    """A run whose app is not bench's: refused at the site."""


def check_pinned_fab(content: bytes) -> None:
    """Raises ``AppNotPinned`` unless the FAB is bench's app: no code, bench's components."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as fab:
            names = set(fab.namelist())
            extra = sorted(names - FAB_FILES)
            if extra:
                raise AppNotPinned(f"the app carries files this site does not run: {extra[:5]}")
            config = tomllib.loads(fab.read("pyproject.toml").decode())
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise AppNotPinned(f"unreadable app bundle ({error})") from None
    components = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    if components != PINNED_COMPONENTS:
        raise AppNotPinned(f"the app names {components}, this site runs only {PINNED_COMPONENTS}")


def serve(
    runtime_api_address: str,
    secret: bytes | None = None,
    poll_interval: float = 0.1,
    max_tasks: int | None = None,
) -> None:
    """Runs ClientApp tasks from the SuperNode's Runtime API, one after another, forever."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.interceptors.http.superexec_auth import SuperExecAuthHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    import bench.federated.apps  # noqa: F401  (torch and bench, once)
    from bench.federated.flower_waits import shorten_pull_backoff

    shorten_pull_backoff()

    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret:
        interceptors.append(
            SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={ACQUIRE_METHOD})
        )
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,  # the SuperNode's Runtime API listens on this host only
        root_certificates=None,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )
    done = 0
    try:
        while max_tasks is None or done < max_tasks:
            answer = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
            )
            if answer.HasField("task") and answer.token:
                event("worker.acquired")
                run_task(runtime_api_address, answer.token)
                done += 1
            else:
                time.sleep(poll_interval)
    finally:
        client.close()


def run_task(runtime_api_address: str, token: str) -> None:
    """One ClientApp task, as Flower's ``flwr-clientapp`` runs it, without leaving the process."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from bench.federated.apps import client_app

    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _, fab = pull_task_input(client)
        event("worker.input", kind=message.metadata.message_type)
        check_pinned_fab(fab.content)
        reply = client_app(message=message, context=context)
        event("worker.ran")
        status, details = SubStatus.COMPLETED, ""
    except Exception as error:  # a failing client becomes an error reply, as in Flower
        code = (
            ErrorCode.LOAD_CLIENT_APP_EXCEPTION
            if isinstance(error, AppNotPinned)
            else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        )
        details = f"{type(error)}:<'{error}'>"
        print(f"bench ClientApp worker: {details}", file=sys.stderr, flush=True)
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
                event("worker.pushed")
        finally:
            push_task_output(client=client, context=context, sub_status=status, details=details)
            event("worker.done")
            heartbeat.stop()
            client.close()


def supervise(command: list[str], restart_wait: float = 1.0) -> int:
    """Runs ``command`` and starts it again whenever it dies, until this process is stopped."""
    import signal

    child: subprocess.Popen | None = None

    def stop(signum, _frame):
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        child = subprocess.Popen(command)
        code = child.wait()
        print(
            f"bench ClientApp worker exited ({code}); starting a new one",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(restart_wait)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.federated.clientapp_worker",
        description="A site's long-running ClientApp process "
        "(for flower-supernode --isolation process).",
    )
    parser.add_argument(
        "--runtime-api-address",
        default="127.0.0.1:9094",
        help="the SuperNode's Runtime API (its --host:--port), default 127.0.0.1:9094",
    )
    parser.add_argument(
        "--superexec-auth-secret-file",
        help="the shared secret file given to flower-supernode --superexec-auth-secret-file",
    )
    parser.add_argument("--poll-interval", type=float, default=0.1, help="seconds between polls")
    parser.add_argument("--no-restart", action="store_true", help="one worker, not supervised")
    args = parser.parse_args(argv)
    secret = None
    if args.superexec_auth_secret_file:
        try:
            with open(args.superexec_auth_secret_file, "rb") as source:
                secret = source.read()
        except OSError as error:
            parser.exit(2, f"bench: error: --superexec-auth-secret-file: {error}\n")
    if not args.no_restart:
        command = [sys.executable, "-m", "bench.federated.clientapp_worker", "--no-restart"]
        command += [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-restart"]
        return supervise(command)
    serve(args.runtime_api_address, secret, args.poll_interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
