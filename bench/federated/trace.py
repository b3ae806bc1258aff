"""An opt-in trace of a federated run's messages, for finding where a round's time goes.

Set ``BENCH_TRACE=/path/trace.jsonl`` in the environment of every process (the
deployment's processes inherit it from whoever starts them: ``LocalFederation``
passes its own environment on) and each traced step appends one JSON line:
``{"t": time.time(), "pid": ..., "tag": ..., **fields}``. Unset, ``event`` does
nothing. ``python -m bench.federated.trace FILE`` prints the lines in time
order, each with the seconds since the first and since the previous one.

Traced steps: the ServerApp pushing a round's messages and receiving each reply
(``server.*``), a SuperNode's pull of a message and push of its reply
(``supernode.*``, with the step's start in ``began``), the ClientApp worker's
task (``worker.*``: acquired, input pulled, app run, reply pushed) and the train
ClientApp's own steps (``client.*``: message read with its array bytes, task
ready, round trained, reply built).
"""

from __future__ import annotations

import json
import os
import time

TRACE_ENV = "BENCH_TRACE"


def tracing() -> bool:
    """Whether ``BENCH_TRACE`` names a trace file (for fields that cost work to compute)."""
    return bool(os.environ.get(TRACE_ENV))


def event(tag: str, **fields) -> None:
    """Appends one line to the trace file, when ``BENCH_TRACE`` names one."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    line = json.dumps(
        {"t": time.time(), "cpu": time.process_time(), "pid": os.getpid(), "tag": tag, **fields},
        default=str,
    )
    # One write of a short line with O_APPEND: lines of concurrent processes do not interleave.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)


def main(argv: list[str] | None = None) -> None:
    import sys

    path = (argv if argv is not None else sys.argv[1:])[0]
    with open(path) as lines:
        events = sorted((json.loads(line) for line in lines if line.strip()), key=lambda e: e["t"])
    first = previous = events[0]["t"] if events else 0.0
    for entry in events:
        fields = {k: v for k, v in entry.items() if k not in ("t", "cpu", "pid", "tag")}
        if "began" in fields:
            fields["began"] = round(fields["began"] - first, 2)
        print(
            f"{entry['t'] - first:9.2f} {entry['t'] - previous:+7.2f} {entry['pid']:>8} "
            f"{entry['tag']:<20} {json.dumps(fields) if fields else ''}"
        )
        previous = entry["t"]


if __name__ == "__main__":
    main()
