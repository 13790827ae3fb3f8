"""Lifecycles as tables: an enum of states, the moves each state allows, one function that moves.

As in h11, a lifecycle is data: a :class:`Lifecycle` holds the legal moves of one kind of thing
(a transfer, the peer network, later sessions and shares), and :meth:`Lifecycle.move` is the only
way its state changes.  An illegal move is our own bug, so it raises
:class:`~mftp.node.errors.NodeUsageError` naming both states; a peer's message that asks for an
illegal move must be refused before it gets here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Generic, TypeVar

from .errors import NodeUsageError

S = TypeVar("S", bound=Enum)


class Lifecycle(Generic[S]):
    """The legal moves between the states of one kind of thing."""

    def __init__(self, name: str, moves: Mapping[S, frozenset[S]]) -> None:
        self.name = name
        self.moves = dict(moves)
        states = set(self.moves)
        for targets in self.moves.values():
            states |= set(targets)
        missing = states - set(self.moves)
        if missing:  # every state must say where it may go, even if nowhere (a final state)
            raise NodeUsageError(f"{name}: no row for {sorted(s.name for s in missing)}")

    def allows(self, current: S, target: S) -> bool:
        """Whether ``current -> target`` is a legal move."""
        return target in self.moves[current]

    def move(self, current: S, target: S) -> S:
        """Return ``target`` if ``current -> target`` is legal; raise a usage error if not."""
        if not self.allows(current, target):
            raise NodeUsageError(f"{self.name}: {current.value} -> {target.value} is not a legal move")
        return target

    def final(self, state: S) -> bool:
        """Whether ``state`` allows no move."""
        return not self.moves[state]
