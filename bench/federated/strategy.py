"""FedAvg with deterministic order, extra payloads both ways, checkpoints.

Flower's FedAvg averages every ArrayRecord in a reply, so each client's extra
payload (FCL's feature vectors) is taken out of the reply before averaging
and forwarded to all clients with the next round's message. Replies are
sorted by partition id before averaging: the sum's order, and so its last
bits, never depends on which client answered first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from logging import WARNING
from typing import Any

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from bench.federated.serialization import packed, plain, record_bytes

# What a RecordDict holds under one key.
RecordItem = ArrayRecord | MetricRecord | ConfigRecord

PAYLOAD_KEY = "payload"
FORWARDED_PREFIX = "payload-from-"


class ClientFailure(RuntimeError):
    pass


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def summarize(reason: str) -> str:
    """One line from a failure's reason: the exception message under the runtime's wrapping."""
    lines = [line.strip() for line in _ANSI.sub("", reason).splitlines() if line.strip()]
    if not lines:
        return "error"
    for line in reversed(lines):
        if "Message: " in line and "occurred" in line:
            return line.split("Message: ", 1)[1].removesuffix("'>")
    raised = [line for line in lines if _RAISED.match(line)]
    return raised[-1] if raised else lines[0]


class BenchFedAvg(FedAvg):
    def __init__(
        self,
        node_partitions: dict[int, int],
        *,
        aggregate: bool,
        validates: bool,
        min_replies: int,
        on_round_end=None,
    ):
        clients = len(node_partitions)
        super().__init__(
            fraction_train=1.0,
            min_train_nodes=clients,
            min_evaluate_nodes=clients,
            min_available_nodes=clients,
        )
        self.node_partitions = node_partitions
        self.aggregate = aggregate
        self.validates = validates
        self.min_replies = min_replies
        self.payloads: dict[int, RecordItem] = {}
        self.round_offset = 0
        self.last_validation: dict | None = None
        self.last_train_metrics: dict[int, dict] = {}
        self.failures: list[dict] = []
        self.bytes_up: dict[int, dict[str, int]] = {}
        self.timeout: float | None = None  # the round timeout, for failure messages
        self._asked: set[int] = set()  # partitions sent a message this round

    def _nodes_in_order(self) -> list[int]:
        return sorted(self.node_partitions, key=lambda node: self.node_partitions[node])

    def _partition(self, message: Message) -> int:
        return self.node_partitions[message.metadata.src_node_id]

    def configure_train(self, server_round, arrays, config, grid) -> Iterable[Message]:
        config = ConfigRecord(
            {
                **config,
                "server-round": server_round,
                "round-index": self.round_offset + server_round - 1,
            }
        )
        content = RecordDict({self.arrayrecord_key: packed(arrays), self.configrecord_key: config})
        for partition, payload in sorted(self.payloads.items()):
            content[f"{FORWARDED_PREFIX}{partition}"] = payload
        self._asked = set(self.node_partitions.values())
        return [
            Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
            for node in self._nodes_in_order()
        ]

    def configure_evaluate(self, server_round, arrays, config, grid) -> Iterable[Message]:
        if not self.validates:
            return []
        config = ConfigRecord({**config, "server-round": server_round})
        content = RecordDict({self.arrayrecord_key: packed(arrays), self.configrecord_key: config})
        self._asked = set(self.node_partitions.values())
        return [
            Message(content, dst_node_id=node, message_type=MessageType.EVALUATE)
            for node in self._nodes_in_order()
        ]

    def _split_replies(
        self, server_round: int, replies: Iterable[Message], stage: str
    ) -> list[Message]:
        """Valid replies in partition order; error replies and missing replies become failures."""
        valid: list[Message] = []
        failed: list[Message] = []
        for reply in replies:
            if reply.metadata.src_node_id not in self.node_partitions:
                continue  # a node that joined after the partitions were mapped
            (failed if reply.has_error() else valid).append(reply)
        round_number = self.round_offset + server_round
        new_failures: list[dict[str, Any]] = [
            {
                "round": round_number,
                "stage": stage,
                "partition": self._partition(reply),
                "reason": reply.error.reason or "error",
            }
            for reply in failed
        ]
        replied = {self._partition(reply) for reply in valid + failed}
        within = (
            f"within the round timeout ({self.timeout:g} s)"
            if self.timeout
            else "before the round ended"
        )
        new_failures += [
            {
                "round": round_number,
                "stage": stage,
                "partition": partition,
                "reason": f"no reply {within}",
            }
            for partition in sorted(self._asked - replied)
        ]
        new_failures.sort(key=lambda f: f["partition"])
        for record in new_failures:
            record["summary"] = summarize(record["reason"])
            self.failures.append(record)
            log(
                WARNING,
                "client %s failed in round %s (%s): %s",
                record["partition"],
                round_number,
                stage,
                record["summary"],
            )
        if len(valid) < self.min_replies:
            raise ClientFailure(
                f"round {round_number}: only {len(valid)} of {len(self.node_partitions)} "
                f"clients replied (minimum {self.min_replies}, run.min_clients); failures: "
                + "; ".join(f"client {f['partition']}: {f['summary']}" for f in new_failures)
            )
        return sorted(valid, key=self._partition)

    def aggregate_train(self, server_round, replies):
        valid = self._split_replies(server_round, replies, "train")
        self.payloads = {}
        self.last_train_metrics = {}
        for reply in valid:
            partition = self._partition(reply)
            content = reply.content
            sizes = {"weights": record_bytes(content[self.arrayrecord_key])}
            if self.aggregate:  # FedAvg averages plain records, key by key
                content[self.arrayrecord_key] = plain(content[self.arrayrecord_key])
            if PAYLOAD_KEY in content:
                self.payloads[partition] = content[PAYLOAD_KEY]
                sizes["payload"] = record_bytes(content[PAYLOAD_KEY])
                del content[PAYLOAD_KEY]
            self.bytes_up[partition] = sizes
            self.last_train_metrics[partition] = dict(next(iter(content.metric_records.values())))
        if not self.aggregate:
            return None, None
        return super().aggregate_train(server_round, valid)

    def aggregate_evaluate(self, server_round, replies) -> MetricRecord | None:
        if not self.validates:
            return None
        valid = self._split_replies(server_round, replies, "evaluate")
        metrics = super().aggregate_evaluate(server_round, valid)
        self.last_validation = dict(metrics) if metrics is not None else None
        return metrics
