from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cqrs_shared.contracts.envelopes import EventEnvelope
from cqrs_shared.viewsets import BUILD_LEASE_S


class ViewStore(Protocol):
    """One collection set: the views and their tracking (processed positions, watermark)."""

    name: str

    async def get_orders(self, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored order documents by id (missing ids are absent)."""

    async def write_orders(self, writes: Sequence[tuple[dict[str, Any], int]]) -> set[str]:
        """Each (document, expected_version): inserted when expected_version is 0, else
        replaced only if the stored version is expected_version. Returns the ids whose write
        lost against another writer (nothing was written for them)."""

    async def write_references(self, customers: dict[str, dict[str, Any]],
                               product_info: dict[str, tuple[dict[str, Any], int]],
                               product_stock: dict[str, tuple[int, int]]) -> None:
        """Customers: fields set (upsert). Products: fields set and version raised to at
        least the given one; stock set only if its position is higher than the stored one."""

    async def mark_processed(self, positions: Sequence[int]) -> None: ...

    async def record_processed(self, positions: Sequence[int]) -> int:
        """Like mark_processed then advance_watermark, but positions that become contiguous
        with the watermark are recorded by raising it, without a document each."""

    async def watermark(self) -> int:
        """The stored watermark (every position up to it is processed; those positions may
        have no `processed` document)."""

    async def advance_watermark(self) -> int:
        """Raises the watermark over the contiguous processed positions; returns it."""

    async def extend_watermark(self, expected: int, upto: int) -> int | None:
        """If the watermark is exactly `expected`, raises it to `upto` (every position in
        between was applied by the caller) and then over the processed positions above;
        returns the new watermark. None, with nothing written, otherwise."""

    async def processed_after(self, position: int, limit: int | None, upto: int | None = None) -> list[int]:
        """Processed positions above `position` (and at most `upto`), ascending, at most
        `limit` of them."""

    async def last_processed(self) -> int: ...


@dataclass(frozen=True)
class Target:
    """A set a live event must be applied to. `strict`: an event whose predecessor is missing
    must be retried later (live sets); otherwise it is skipped (a set being rebuilt, which
    gets the event again from the history)."""

    store: ViewStore
    strict: bool


class ViewSets(Protocol):
    async def targets(self) -> list[Target]:
        """The sets live events go to, newest first (a pointer at most POINTER_TTL_S old)."""


@dataclass(frozen=True)
class Pointer:
    """The pointer document: which set is live, which is being built, which is retiring."""

    generation: int = 0  # bumped by every change (compare-and-set)
    live: str = ""
    building: str | None = None
    strict: bool = False  # the building set has caught up: live events must reach it
    owner: str | None = None  # the rebuild that builds it
    heartbeat_at: datetime | None = None
    retiring: str | None = None  # the previous live set, still written until retire_until
    retire_until: datetime | None = None
    next_set: int = 1

    def target_names(self, now: datetime) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        if self.building is not None and self.heartbeat_at is not None \
                and (now - self.heartbeat_at).total_seconds() < BUILD_LEASE_S:
            out.append((self.building, self.strict))  # (not the set of a rebuild that died)
        out.append((self.live, True))
        if self.retiring is not None and self.retire_until is not None and now < self.retire_until:
            out.append((self.retiring, True))
        return out


class SetRegistry(Protocol):
    """The pointer document and the collection sets (used by the rebuild)."""

    async def read(self) -> Pointer: ...

    async def replace(self, new: Pointer, expected_generation: int) -> bool:
        """Writes the pointer if its generation is still `expected_generation` (one atomic
        update); False when another writer changed it."""

    async def heartbeat(self, building: str, owner: str, at: datetime) -> bool: ...

    def store(self, name: str) -> ViewStore: ...

    async def create_indexes(self, name: str) -> None:
        """Creates the indexes the queries need on a set (idempotent)."""

    async def drop_except(self, keep: set[str]) -> list[str]:
        """Drops every set not in `keep`; returns their names."""


class Batch(Protocol):
    events: list[EventEnvelope]

    async def done(self, invalid: Sequence[tuple[EventEnvelope, str]]) -> None:
        """Dead-letters the invalid events and acknowledges the whole batch."""


class HistoryFeed(Protocol):
    """History delivered over RabbitMQ into the rebuild's own queue."""

    # the last position of each replay whose end has been received, in order: every event of
    # that replay has been delivered by a batch before
    replay_ends: list[int]

    async def request(self, from_position: int) -> None: ...

    async def next_batch(self, max_events: int, idle_s: float) -> Batch | None:
        """Up to max_events events in arrival order; None after idle_s without any."""
