"""The ClientApp and ServerApp: the same objects run in-process and on Flower's runtimes.

Both read the task from ``run_config["job"]``: the path of a job file written
by the runner (see ``bench.federated.jobs``). Only weights, metrics and
payload arrays (FCL's feature vectors) cross between them.
"""

from __future__ import annotations

import json
import logging
import time
from logging import ERROR
from pathlib import Path
from typing import Any, cast

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
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from tqdm.auto import tqdm

from bench.federated.checkpoint import ServerCheckpoint
from bench.federated.claims import (
    ClaimChecker,
    PartitionKeysError,
    new_nonce,
    read_partition_keys,
    sign_claim,
)
from bench.federated.flower_waits import shorten_pull_backoff
from bench.federated.grid import PromptGrid
from bench.federated.jobs import task_for
from bench.federated.outcomes import collect_outcomes, finish_reply
from bench.federated.serialization import (
    arrays_to_record,
    record_bytes,
    record_to_arrays,
    record_to_state,
    state_to_message_record,
    state_to_record,
)
from bench.federated.strategy import FORWARDED_PREFIX, PAYLOAD_KEY, BenchFedAvg, ClientFailure
from bench.federated.trace import event, tracing
from bench.io import atomic_write_text

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
    return task_for(_job(context), context.run_id)


@client_app.query()
def identify(msg: Message, context: Context) -> Message:
    """Says which partition this node serves, signed with the site's key when asked to prove it."""
    partition = _partition(context)
    content = RecordDict({"metrics": MetricRecord({"partition-id": partition})})
    request = msg.content.config_records.get("config")
    nonce = request.get("claim-nonce") if request is not None else None
    key = context.node_config.get("private-key")
    if nonce and key:
        signature = sign_claim(
            Path(str(key)), context.run_id, context.node_id, partition, bytes.fromhex(str(nonce))
        )
        content["claim"] = ConfigRecord({"signature": signature})
    return Message(content, reply_to=msg)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    if tracing():  # counting a packed record's bytes copies it: only when traced
        event("client.train", bytes_in=sum(map(record_bytes, msg.content.array_records.values())))
    task = _task(context)
    partition = _partition(context)
    event("client.task", partition=partition)
    payloads = {
        int(key.removeprefix(FORWARDED_PREFIX)): record_to_arrays(record)
        for key, record in msg.content.array_records.items()
        if key.startswith(FORWARDED_PREFIX) and int(key.removeprefix(FORWARDED_PREFIX)) != partition
    }
    round_index = int(cast(int, msg.content.config_records["config"]["round-index"]))
    result = task.train_round(
        partition, round_index, record_to_state(msg.content.array_records["arrays"]), payloads
    )
    event("client.trained", partition=partition)
    content = RecordDict(
        {
            "arrays": state_to_message_record(result.shared),
            "metrics": MetricRecord({"num-examples": result.num_examples, **result.metrics}),
        }
    )
    if result.payload:
        content[PAYLOAD_KEY] = arrays_to_record(result.payload)
    if tracing():
        event("client.reply", bytes_out=sum(map(record_bytes, content.array_records.values())))
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


def map_nodes_to_partitions(
    grid: Grid, expected: int, wait: float = 0.0, claims: ClaimChecker | None = None
) -> dict[int, int]:
    """Asks every node for its partition id: Flower's node ids are random.

    Without ``claims`` (one machine, in-process or simulation) the nodes' word is
    taken. With ``claims`` (deployment) each node must prove its claim by signing
    the run's nonce; a claim that does not verify, names a partition nobody holds
    or repeats an accepted one is refused and logged, and the node takes no part.
    Waits up to ``wait`` seconds for one accepted node per partition.
    """
    deadline = time.monotonic() + wait
    mapping: dict[int, int] = {}
    asked: set[int] = set()
    while True:
        node_ids = sorted(set(grid.get_node_ids()) - asked)
        # Without claims, all nodes are asked at once, as soon as there are enough.
        ready = claims is not None or len(asked) + len(node_ids) >= expected
        if node_ids and (ready or time.monotonic() >= deadline):
            asked.update(node_ids)
            mapping.update(_ask_partitions(grid, node_ids, claims, max(wait, 60.0)))
        if claims is None and asked:
            break
        if len(mapping) == expected and sorted(mapping.values()) == list(range(expected)):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if sorted(mapping.values()) != list(range(expected)):
        refused = "; ".join(
            f"node {r['node_id']} (partition {r['partition']}): {r['reason']}"
            for r in (claims.refused if claims else [])
        )
        raise RuntimeError(
            f"expected one node for each partition 0..{expected - 1}, "
            f"{'accepted claims' if claims else 'nodes reported'} {sorted(mapping.values())} "
            f"(waited {wait:g} s); check each SuperNode's --node-config partition-id"
            + (f"; refused: {refused}" if refused else "")
        )
    return mapping


def _ask_partitions(
    grid: Grid, node_ids: list[int], claims: ClaimChecker | None, timeout: float
) -> dict[int, int]:
    request: dict[str, Any] = {} if claims is None else {"claim-nonce": claims.nonce.hex()}
    queries = [
        Message(
            RecordDict({"config": ConfigRecord(request)}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in node_ids
    ]
    mapping = {}
    for reply in grid.send_and_receive(queries, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            if claims is None:
                raise RuntimeError(f"node {node} did not say its partition: {reply.error.reason}")
            claims.refused.append(
                {"node_id": node, "partition": None, "reason": reply.error.reason}
            )
            continue
        partition = int(cast(int, reply.content.metric_records["metrics"]["partition-id"]))
        if claims is None:
            mapping[node] = partition
            continue
        proof = reply.content.config_records.get("claim")
        reason = claims.check(node, partition, str(proof["signature"]) if proof else None)
        if reason is None:
            mapping[node] = partition
        else:
            log(
                ERROR, "bench: refused node %s's claim to partition %s: %s", node, partition, reason
            )
    return mapping


def claim_checker(context: Context, deployed: bool) -> ClaimChecker | None:
    """The run's claim checker, from the operator's partition keys (run config
    ``partition-keys``). A deployment must name them; on one machine (the in-process grid,
    Flower's simulation) the nodes' word is taken."""
    path = context.run_config.get("partition-keys")
    if path:
        return ClaimChecker(read_partition_keys(Path(str(path))), context.run_id, new_nonce())
    if not deployed:
        return None
    raise PartitionKeysError(
        "this run names no partition keys (run config "
        'partition-keys="/path/partition-keys.json"); a deployment verifies which site '
        "serves which partition (docs/DEPLOYMENT.md)"
    )


def record_claims(folder: Path, claims: ClaimChecker, mapping: dict[int, int]) -> Path:
    """``<work>/server/claims.json``: the run's accepted and refused partition claims."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "claims.json"
    atomic_write_text(
        path,
        json.dumps(
            {
                "run_id": claims.run_id,
                "accepted": [
                    {"node_id": node, "partition": partition}
                    for node, partition in sorted(mapping.items(), key=lambda item: item[1])
                ],
                "refused": claims.refused,
            },
            indent=2,
        )
        + "\n",
    )
    return path


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
    from flwr.superlink.grid.http_grid import HttpGrid

    deployed = isinstance(grid, HttpGrid)  # else the in-process grid or Flower's simulation
    if deployed:
        grid = PromptGrid(grid)  # looks for replies every 0.2 s, not every 3 s
        shorten_pull_backoff()  # and pulls a reply's objects without waiting 1 s
    task = task_for(str(context.run_config["job"]), context.run_id)
    checkpoint = ServerCheckpoint(Path(task.work_dir) / "server", task.server_decision)
    min_replies, timeout = fault_settings(task)
    claims = claim_checker(context, deployed)
    try:
        partitions = map_nodes_to_partitions(grid, task.num_clients, wait=timeout, claims=claims)
    finally:
        if claims is not None:
            record_claims(Path(task.work_dir) / "server", claims, claims.accepted)
    strategy = BenchFedAvg(
        partitions,
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
            event("server.aggregated", round=done + server_round)
            checkpoint.save(done + server_round, current, strategy)
            event("server.checkpointed", round=done + server_round)
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
