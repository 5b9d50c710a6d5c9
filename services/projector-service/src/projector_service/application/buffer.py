"""The rebuild's write-behind buffer. A rebuild writes a set that nobody reads yet, so it need
not write each batch as it comes: every batch is folded in memory onto what the earlier
batches folded, and the final documents are written together when the buffer is full or the
history has run dry. An order is then written once per flush (an insert, in the common case)
instead of once per batch that touches it plus a read of it each time, and the customers,
products and processed positions once per flush instead of once per batch.

Correct alongside the live projectors, which write the building set too (docs/architecture.md,
"Rebuilding the views"): a buffered order is written guarded by the version the store held
when it was read (0: insert). If that guard loses (a live projector wrote the order
meanwhile), the stored version is read again: when it is at least the buffered one, the store
already holds these events (a document at version v is the fold of versions 1..v, whoever
folded it); otherwise the buffered document is written over it, guarded by that version.
Positions are recorded only once their views are written, so nothing is marked processed
that the store does not hold. Redeliveries fold as duplicates (a version not above the
buffered one is done).

Orders in a final status (cancelled, refunded: no event follows them) are written early, in
the background while later batches are folded, so that the database works while the rebuild
folds instead of after it. This only schedules the work: an event that still came for such an
order would be folded onto the buffered document, or read back once written, like any other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.application.apply import CONFLICT_ROUNDS, Applied
from projector_service.application.ports import ViewStore
from projector_service.domain.fold import ReferenceWrites, fold_order, fold_references, group_orders
from projector_service.domain.orders import FINAL_STATUSES, ORDER_EVENTS

log = logging.getLogger(__name__)
WRITE_CHUNK = 2000  # documents per bulk write
WRITES_IN_FLIGHT = 2  # the client encodes the next chunk while the server writes one


@dataclass
class _Order:
    doc: dict[str, Any]  # the folded document (never modified in place: folds make new ones)
    stored: int  # the version the store held when this was read (0: none): the write's guard
    positions: list[int]  # folded into `doc`, recorded once it is written


class FoldBuffer:
    """Folds batches of history into memory (`add`) and writes them to `store` (`flush`).
    `max_orders` bounds the memory (about 3 KB per order, measured): `full` says when to flush."""

    def __init__(self, store: ViewStore, *, max_orders: int, write_chunk: int = WRITE_CHUNK,
                 writes_in_flight: int = WRITES_IN_FLIGHT) -> None:
        self._store = store
        self._max = max(1, max_orders)
        self._chunk = max(1, write_chunk)
        self._in_flight = max(1, writes_in_flight)
        self._orders: dict[str, _Order] = {}
        self._refs = ReferenceWrites()
        self._positions: list[int] = []  # done, needing no order write (reference events, duplicates)
        self._final: list[str] = []  # orders folded into a final status, to be written early
        self._early: asyncio.Task[None] | None = None  # the early write in progress
        self._written: list[tuple[str, _Order, dict[str, Any]]] = []  # written early, not settled yet

    @property
    def orders(self) -> int:
        return len(self._orders)

    @property
    def full(self) -> bool:
        return len(self._orders) >= self._max or len(self._refs) >= self._max

    def __bool__(self) -> bool:
        return bool(self._orders or self._refs or self._positions)

    async def add(self, events: Sequence[EventEnvelope]) -> Applied:
        """Folds `events` into the buffer. Reads only the orders neither buffered nor starting
        with their first version here. `done`: folded (written by the next flush), `blocked`:
        an earlier version is missing, `invalid`: can never be applied. Nothing is changed
        before the read, so a failed call can be repeated."""
        self._settle()
        out = Applied()
        pending = group_orders(list(events))
        to_read = [oid for oid, evs in pending.items()
                   if oid not in self._orders and min(e.version for e in evs) != 1]
        stored = await self._store.get_orders(to_read)
        done = [e for e in events if e.eventType not in ORDER_EVENTS]
        self._positions.extend(e.position for e in done)
        for oid, evs in pending.items():
            held = self._orders.get(oid)
            f = fold_order(held.doc if held else stored.get(oid), evs)
            out.blocked.extend(f.blocked)
            out.invalid.extend(f.invalid)
            done.extend(f.done)
            positions = [e.position for e in f.done]
            if held is not None:
                if f.write is not None:
                    held.doc = f.write
                    out.written.add(oid)
                held.positions.extend(positions)
            elif f.write is not None:
                self._orders[oid] = _Order(f.write, f.expected_version, positions)
                out.written.add(oid)
            else:
                self._positions.extend(positions)  # duplicates of what the store holds
            if f.write is not None and f.write.get("status") in FINAL_STATUSES:
                self._final.append(oid)
        self._refs.merge(fold_references(done))
        out.done = done
        out.changed = bool(out.written) or bool(done)
        if len(self._final) >= self._chunk and (self._early is None or self._early.done()):
            self._early = asyncio.create_task(self._write_early())
        return out

    async def _write_early(self) -> None:
        while len(self._final) >= self._chunk:
            chunk, self._final = self._final[:self._chunk], self._final[self._chunk:]
            await self._write_early_chunk(chunk)

    async def _write_early_chunk(self, oids: list[str]) -> None:
        """Writes these (final) orders now; each one written, and not folded further meanwhile,
        leaves the buffer, its positions recorded with the next flush. Anything else (a lost
        guard, a failure) stays buffered for the flush, which resolves it."""
        orders = [(oid, o, o.doc) for oid in dict.fromkeys(oids) if (o := self._orders.get(oid)) is not None]
        try:
            lost = await self._store.write_orders([(doc, o.stored) for _, o, doc in orders])
        except Exception as exc:  # noqa: BLE001 - the flush writes them
            log.info("early write of %d order(s) failed (%r); the flush writes them", len(orders), exc)
            return
        # taken into account by the next add() or flush(), never while one of them waits
        self._written.extend((oid, o, doc) for oid, o, doc in orders if oid not in lost)

    def _settle(self) -> None:
        """Applies the outcome of the early writes done so far."""
        written, self._written = self._written, []
        for oid, o, doc in written:
            if self._orders.get(oid) is not o:
                continue
            if o.doc is doc:
                del self._orders[oid]
                self._positions.extend(o.positions)
            else:  # folded further meanwhile: the store holds the version written
                o.stored = int(doc["version"])

    def discard(self) -> None:
        """Stops the background writes (the buffer is abandoned: its set is dropped later)."""
        if self._early is not None and not self._early.done():
            self._early.cancel()

    async def flush(self) -> list[int]:
        """Writes the buffered views, then records their positions; returns the positions
        whose order could not be written (another writer kept winning: the rebuild's
        comparison asks for them again). The buffer is emptied only once everything is
        written, so a failed flush can be repeated (writes already made are found stored)."""
        if self._early is not None:
            await self._early
            self._early = None
        self._settle()
        if not self:
            return []
        unwritten = await self._write_orders(list(self._orders.values()))
        refs = self._refs
        if refs:
            await self._store.write_references(refs.customers, refs.product_info, refs.product_stock)
        failed = {id(o) for o in unwritten}
        positions = list(self._positions)
        for o in self._orders.values():
            if id(o) not in failed:
                positions.extend(o.positions)
        await self._store.record_processed(positions)
        self._orders, self._refs, self._positions, self._final = {}, ReferenceWrites(), [], []
        return sorted(p for o in unwritten for p in o.positions)

    async def _write_orders(self, orders: list[_Order]) -> list[_Order]:
        pending = orders
        limit = asyncio.Semaphore(self._in_flight)
        for _ in range(CONFLICT_ROUNDS):
            if not pending:
                break
            lost: set[str] = set()

            async def write(chunk: list[_Order]) -> None:
                async with limit:
                    lost.update(await self._store.write_orders([(o.doc, o.stored) for o in chunk]))

            await asyncio.gather(*(write(pending[i:i + self._chunk]) for i in range(0, len(pending), self._chunk)))
            losers = [o for o in pending if o.doc["id"] in lost]
            if not losers:
                return []
            stored = await self._store.get_orders(o.doc["id"] for o in losers)
            pending = []
            for o in losers:
                version = int(stored[o.doc["id"]]["version"]) if o.doc["id"] in stored else 0
                if version < int(o.doc["version"]):
                    o.stored = version  # write ours over it
                    pending.append(o)
                # else: the store holds these versions already (written by a live projector)
        return pending
