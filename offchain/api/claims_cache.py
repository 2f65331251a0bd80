"""Encoded bodies of ``GET /holders/{address}/claims``, built once per address and version of
the rounds (and of the chain's claimed view), so a repeated request costs a dictionary lookup
instead of building and serialising pydantic models again.

The bytes are exactly what FastAPI's ``response_model`` path writes for the same
:class:`~offchain.api.schemas.HolderClaims` (``TypeAdapter.dump_json(by_alias=True)``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import TypeAdapter

from offchain.allocation import wei_str
from offchain.api.rounds_view import RoundCache, RoundIndex, RoundKey, round_ids
from offchain.api.schemas import Claimable, ClaimedSource, HolderClaims
from offchain.layout import RoundPaths

if TYPE_CHECKING:
    from offchain.chain.claims_watch import ClaimedView

__all__ = ["ClaimsResponses", "Generation", "holder_claims_model"]

_ADAPTER = TypeAdapter(HolderClaims)


def holder_claims_model(
    account: str, rounds: Sequence[tuple[int, RoundIndex]], view: ClaimedView | None
) -> HolderClaims:
    """Every payout of checksummed ``account`` in ``rounds`` ``(round_id, index)``, ascending:
    index, amount (wei, decimal string), proof, root and claimed flag (from the chain's
    ``view``, or without one from ``claims.json``).

    Raises:
        FileNotFoundError: a round pays ``account`` but has no ``tree.json``.
        AllocationError: a payout index is missing from its round's tree.
    """
    source: ClaimedSource = "chain" if view is not None else "node"
    found: list[Claimable] = []
    total_wei = 0
    for round_id, rnd in rounds:
        for index, amount in rnd.entries.get(account, ()):
            total_wei += amount
            found.append(
                Claimable(
                    round_id=round_id,
                    index=index,
                    account=account,
                    amount_wei=wei_str(amount, "amount_wei"),
                    proof=rnd.proof(index),
                    merkle_root=rnd.merkle_root,
                    claimed=rnd.is_claimed(round_id, index, view),
                    claimed_source=source,
                )
            )
    return HolderClaims(
        address=account,
        total_wei=wei_str(total_wei, "total_wei"),
        claimed_source=source,
        claims=found,
    )


@dataclass(frozen=True)
class Generation:
    """One version of what the endpoint reads: each served round's id, paths and
    :data:`~offchain.api.rounds_view.RoundKey`, and the chain's view (None: ``claims.json``)."""

    rounds: tuple[tuple[int, RoundPaths, RoundKey], ...]
    view: ClaimedView | None

    def same_as(self, other: Generation | None) -> bool:
        return (
            other is not None
            and self.view is other.view  # a refreshed view is a new object
            and [(r, k) for r, _, k in self.rounds] == [(r, k) for r, _, k in other.rounds]
        )


class ClaimsResponses:
    """Encoded claim bodies of the current :class:`Generation`, per checksummed address.

    Only addresses paid in some round are kept (an unknown address is answered, not stored),
    so the memory is bounded by the run folder's payees. A new generation (a round posted or
    rewritten, a claim recorded, a newer chain view) empties the store.

    Args:
        cache: The parsed rounds.
    """

    def __init__(self, cache: RoundCache) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._generation: Generation | None = None
        self._bodies: dict[str, bytes] = {}

    def generation(self, run_dir: Path, view: ClaimedView | None) -> Generation:
        """The current generation (a directory listing and three ``stat`` calls per round)."""
        rounds = []
        for round_id in round_ids(run_dir):
            paths = RoundPaths(run_dir, round_id)
            rounds.append((round_id, paths, RoundCache.key(paths)))
        return Generation(tuple(rounds), view)

    def cached(self, generation: Generation, account: str) -> bytes | None:
        """The stored body of ``account`` for ``generation``, or None."""
        current = self._generation
        if not generation.same_as(current):
            return None
        return self._bodies.get(account)

    def is_parsed(self, generation: Generation) -> bool:
        """Whether every round of ``generation`` is parsed (:meth:`body` will not parse)."""
        return all(self.cache.is_current(paths, key) for _, paths, key in generation.rounds)

    def body(self, generation: Generation, account: str) -> bytes:
        """The encoded :func:`holder_claims_model` of ``account``, stored for ``generation``.

        Parses the rounds that are not yet (:meth:`RoundCache.get`): call it off the event
        loop unless :meth:`is_parsed`.

        Raises:
            As :func:`holder_claims_model`, and as :meth:`RoundCache.get` for a round whose
            artifacts do not parse.
        """
        rounds = [(rid, self.cache.get(paths, key)) for rid, paths, key in generation.rounds]
        body = _ADAPTER.dump_json(holder_claims_model(account, rounds, generation.view),
                                  by_alias=True)
        if any(account in rnd.entries for _, rnd in rounds):
            with self._lock:
                if not generation.same_as(self._generation):
                    self._generation, self._bodies = generation, {}
                self._bodies[account] = body
        return body
