"""The ClientApp and ServerApp: the same objects run in-process and on Flower's runtimes.

Both read the task from ``run_config["job"]``: the path of a job file written
by the runner (see ``bench.federated.jobs``). Only weights, metrics and
payload arrays (FCL's feature vectors) cross between them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import cast

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from tqdm.auto import tqdm

from bench.federated.checkpoint import ServerCheckpoint
from bench.federated.jobs import task_for
from bench.federated.outcomes import collect_outcomes, finish_reply
from bench.federated.serialization import (
    arrays_to_record,
    record_to_arrays,
    record_to_state,
    state_to_record,
)
from bench.federated.strategy import FORWARDED_PREFIX, PAYLOAD_KEY, BenchFedAvg, ClientFailure

client_app = ClientApp()
server_app = ServerApp()


def _partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _job(context: Context) -> str:
    """The job file: a site's own (node config ``job``) or the run's (run config ``job``)."""
    return str(context.node_config.get("job") or context.run_config["job"])


def _task(context: Context):
    """This node's task: built from its site's own data at a federation's site (node config
    ``site``), else from the job file."""
    if context.node_config.get("site"):
        from bench.federated.site import site_task

        return site_task(context)
    return task_for(_job(context))


@client_app.query()
def identify(msg: Message, context: Context) -> Message:
    return Message(
        RecordDict({"metrics": MetricRecord({"partition-id": _partition(context)})}), reply_to=msg
    )


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    task = _task(context)
    partition = _partition(context)
    payloads = {
        int(key.removeprefix(FORWARDED_PREFIX)): record_to_arrays(record)
        for key, record in msg.content.array_records.items()
        if key.startswith(FORWARDED_PREFIX) and int(key.removeprefix(FORWARDED_PREFIX)) != partition
    }
    round_index = int(cast(int, msg.content.config_records["config"]["round-index"]))
    result = task.train_round(
        partition, round_index, record_to_state(msg.content.array_records["arrays"]), payloads
    )
    content = RecordDict(
        {
            "arrays": state_to_record(result.shared),
            "metrics": MetricRecord({"num-examples": result.num_examples, **result.metrics}),
        }
    )
    if result.payload:
        content[PAYLOAD_KEY] = arrays_to_record(result.payload)
    return Message(content, reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task = _task(context)
    num_examples, metrics = task.validate(
        _partition(context), record_to_state(msg.content.array_records["arrays"])
    )
    return Message(
        RecordDict({"metrics": MetricRecord({"num-examples": num_examples, **metrics})}),
        reply_to=msg,
    )


@client_app.query("finish")
def finish(msg: Message, context: Context) -> Message:
    return Message(finish_reply(_task(context), _partition(context), msg.content), reply_to=msg)


def map_nodes_to_partitions(grid: Grid, expected: int, wait: float = 0.0) -> dict[int, int]:
    """Asks every node for its partition id: Flower's node ids are random.

    Waits up to ``wait`` seconds for ``expected`` nodes to connect (deployment).
    """
    deadline = time.monotonic() + wait
    node_ids = sorted(grid.get_node_ids())
    while len(node_ids) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        node_ids = sorted(grid.get_node_ids())
    queries = [
        Message(
            RecordDict({"config": ConfigRecord({})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in node_ids
    ]
    mapping = {}
    for reply in grid.send_and_receive(queries, timeout=max(wait, 60.0)):
        if reply.has_error():
            raise RuntimeError(
                f"node {reply.metadata.src_node_id} did not say its partition: {reply.error.reason}"
            )
        mapping[reply.metadata.src_node_id] = int(
            cast(int, reply.content.metric_records["metrics"]["partition-id"])
        )
    if sorted(mapping.values()) != list(range(expected)):
        raise RuntimeError(
            f"expected one node for each partition 0..{expected - 1}, nodes reported "
            f"{sorted(mapping.values())} "
            f"(waited {wait:g} s); check each SuperNode's --node-config partition-id"
        )
    return mapping


def fault_settings(task) -> tuple[int, float]:
    """(minimum replies per round, round timeout in seconds) from the task's run config."""
    run_cfg = getattr(task, "config", {}).get("run", {})
    wanted = int(run_cfg.get("min_clients", 0))
    min_replies = task.num_clients if wanted <= 0 else min(wanted, task.num_clients)
    timeout = float(run_cfg.get("flower", {}).get("round_timeout", 3600))
    return min_replies, timeout


@server_app.main()
def serve(grid: Grid, context: Context) -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)
    task = task_for(str(context.run_config["job"]))
    checkpoint = ServerCheckpoint(Path(task.work_dir) / "server", task.server_decision)
    min_replies, timeout = fault_settings(task)
    strategy = BenchFedAvg(
        map_nodes_to_partitions(grid, task.num_clients, wait=timeout),
        aggregate=task.aggregate,
        validates=task.validates,
        min_replies=min_replies,
    )
    strategy.timeout = timeout
    arrays, done = checkpoint.resume(strategy)
    if arrays is None:
        arrays = state_to_record(task.initial_state())

    label = getattr(task, "progress_label", None)
    bar = tqdm(
        total=task.num_rounds,
        initial=done,
        desc=label,
        unit="round",
        leave=False,
        disable=label is None,
    )

    def end_of_round(server_round: int, current: ArrayRecord):
        nonlocal arrays
        if server_round > 0:
            checkpoint.save(done + server_round, current, strategy)
            arrays = current
            bar.update()

    # One round per start(): the task's stopping rule may end training before the maximum.
    try:
        while done < task.num_rounds and not checkpoint.stopped:
            strategy.round_offset = done
            strategy.start(grid, arrays, num_rounds=1, timeout=timeout, evaluate_fn=end_of_round)
            done += 1
    except ClientFailure:
        checkpoint.record_failures(strategy)
        raise
    finally:
        bar.close()
    kept = checkpoint.best or {"round": None, "state": checkpoint.last_state}
    summary = {"rounds": done, "stopped": checkpoint.stopped, "best_round": kept["round"]}
    outcomes = collect_outcomes(
        grid,
        strategy.node_partitions,
        summary,
        kept["state"] if task.aggregate else None,
        timeout,
    )
    checkpoint.finish(done, outcomes)
