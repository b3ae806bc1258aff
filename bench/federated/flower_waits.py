"""Flower 1.41's back-off for a pulled object that is not there yet, shortened.

Each hop of a round (ServerApp -> SuperLink -> SuperNode -> ClientApp, and back)
hands a message on as soon as its sender has announced it, while the sender is
still pushing its objects; a receiver asking for an object too early gets
"unavailable" and Flower's ``pull_objects`` waits 1 s before asking again
(doubling up to 10 s: ``flwr.supercore.constant.PULL_INITIAL_BACKOFF``, bound as
the functions' default arguments). On a short round that wait was paid at up to
three hops. ``shorten_pull_backoff`` starts the back-off at ``INITIAL_BACKOFF``
seconds instead, in this process (the doubling, the 10 s cap and Flower's limits
on tries and time are kept): the SuperNodes (``bench.federated.supernode``), the
ClientApp workers and the deployed ServerApp call it.
"""

from __future__ import annotations

INITIAL_BACKOFF = 0.05


def shorten_pull_backoff(initial: float = INITIAL_BACKOFF) -> None:
    """Makes Flower's object pulls in this process retry after ``initial`` seconds first."""
    from flwr.supercore.inflatable import inflatable_utils

    for function in (
        inflatable_utils.pull_objects,
        inflatable_utils.pull_and_inflate_object_from_tree,
    ):
        defaults = function.__kwdefaults__
        assert defaults is not None  # keyword-only arguments with defaults, in flwr 1.41
        defaults["initial_backoff"] = min(defaults["initial_backoff"], initial)
