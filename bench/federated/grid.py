"""A Flower ``Grid`` that runs the ClientApp in this process, without Ray.

Messages are delivered one at a time in the order the strategy sends them
(ascending partition id), so a run is deterministic. A ClientApp that raises
yields an error reply, as Flower's runtime does, and the strategy decides.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from bench.federated.trace import event

CLIENT_APP_ERROR = 2  # Flower's code for an exception raised in a ClientApp


class InProcessGrid(Grid):
    def __init__(self, client_app, num_partitions: int, run_config: dict, run_id: int = 1):
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        # Node ids are arbitrary, as in Flower; the server maps them to partitions.
        self.contexts = {
            7_000_000 + 7919 * partition: Context(
                run_id=run_id,
                node_id=7_000_000 + 7919 * partition,
                node_config={"partition-id": partition, "num-partitions": num_partitions},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for partition in range(num_partitions)
        }
        self._replies: dict[str, Message] = {}
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = 0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            self._replies[message_id] = self._deliver(message)
            ids.append(message_id)
        return ids

    def _deliver(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            return self.client_app(message, context)
        except Exception as error:  # any client failure becomes an error reply
            reason = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
            return Message(Error(code=CLIENT_APP_ERROR, reason=reason), reply_to=message)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [
            self._replies.pop(message_id)
            for message_id in message_ids
            if message_id in self._replies
        ]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


class PromptGrid(Grid):
    """Another grid, whose ``send_and_receive`` looks for replies every ``poll`` seconds.

    Flower 1.41's deployment grid (``HttpGrid``) waits 3 s between looks, which
    rounds every round up to a multiple of 3 s; this uses the grid's own
    ``push_messages`` and ``pull_messages`` and looks more often.
    """

    def __init__(self, grid: Grid, poll: float = 0.2):
        self.grid = grid
        self.poll = poll

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        event("server.push", kind=messages[0].metadata.message_type if messages else None)
        waiting = set(self.push_messages(messages))
        event("server.pushed", messages=len(waiting))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            found = list(self.pull_messages(waiting))
            replies.extend(found)
            for reply in found:
                event("server.reply", node=reply.metadata.src_node_id)
            waiting -= {reply.metadata.reply_to_message_id for reply in found}
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll)
        return replies
