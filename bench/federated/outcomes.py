"""The closing exchange of a task: each client reports what only it can compute.

After the last round the server sends every node one ``query.finish`` message
(how training ended and, when the clients share a model, the model kept); each
client answers with ``FederatedTask.client_outcome``: tensors (pretrained parts,
a locally kept model) and a JSON record (how its training ended, per-volume test
scores keyed by its own patient ids). Runs the same in one process, under
simulation and across sites, so result rows are always made from these replies.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from bench.federated.serialization import record_to_state, state_to_message_record
from bench.federated.strategy import ClientFailure, summarize

FINISH = f"{MessageType.QUERY}.finish"


def finish_request(summary: dict, shared: dict | None) -> RecordDict:
    content = RecordDict({"config": ConfigRecord({"summary": json.dumps(summary)})})
    if shared is not None:
        content["arrays"] = state_to_message_record(shared)
    return content


def finish_reply(task, partition: int, content: RecordDict) -> RecordDict:
    """The client side: ``task.client_outcome`` as a reply's content."""
    summary = json.loads(str(content.config_records["config"]["summary"]))
    shared = record_to_state(content.array_records["arrays"]) if "arrays" in content else None
    arrays, info = task.client_outcome(partition, summary, shared)
    return RecordDict(
        {
            "arrays": state_to_message_record(arrays),
            "info": ConfigRecord({"json": json.dumps(info)}),
        }
    )


def collect_outcomes(
    grid, node_partitions: dict[int, int], summary: dict, shared: dict | None, timeout: float
) -> list[dict]:
    """Per partition (in order): ``{"arrays": tensors, "info": record}``; every client must
    answer (a result needs all of them), else ClientFailure naming those that did not."""
    messages = [
        Message(finish_request(summary, shared), dst_node_id=node, message_type=FINISH)
        for node in sorted(node_partitions, key=node_partitions.__getitem__)
    ]
    outcomes: dict[int, dict] = {}
    problems: dict[int, str] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        partition = node_partitions.get(reply.metadata.src_node_id)
        if partition is None:
            continue
        if reply.has_error():
            problems[partition] = summarize(reply.error.reason or "error")
            continue
        outcomes[partition] = {
            "arrays": record_to_state(reply.content.array_records["arrays"]),
            "info": json.loads(str(reply.content.config_records["info"]["json"])),
        }
    for partition in sorted(set(node_partitions.values()) - set(outcomes) - set(problems)):
        problems[partition] = f"no reply within {timeout:g} s"
    if problems:
        raise ClientFailure(
            "finishing: " + "; ".join(f"client {p}: {why}" for p, why in sorted(problems.items()))
        )
    return [outcomes[p] for p in sorted(outcomes)]
