"""Rebuild without downtime: replay the whole history into a fresh collection set while the
queries keep reading the live one, then move the pointer in one atomic update.

Phases (the reasoning is in docs/architecture.md, "Rebuilding the views"):

1. **register**: the pointer names the new set as `building` (compare-and-set; a second
   rebuild is refused while this one's heartbeat is fresh). From then on the live projectors
   apply every event to the new set too, skipping an order event whose earlier version the new
   set lacks (the replay brings it).
2. **replay**: the history arrives over RabbitMQ in the rebuild's own queue, from position 1,
   and is folded in memory batch after batch (application/buffer.py), then written with few,
   large writes (each order once per flush; positions contiguous with the set's watermark
   recorded by raising it). Whenever the queue runs dry, the buffer is written and the new set
   is compared with the live one: a position the live set has processed and the new set has
   not is requested again (replay from there). The query indexes are built once the history
   is in, while the strict pointer (3.) propagates.
3. **strict**: once the new set has every position the live set has, the pointer marks it
   strict: live projectors must now apply each event to it (retrying a missing predecessor),
   before the live set. After PROPAGATION_S every projector writes the new set first, the
   comparison is made again and any remaining hole replayed.
4. **switch**: one update makes the new set live and the old one `retiring`; projectors keep
   writing the old set until `retire_until`, so a query that still uses the old pointer reads a
   complete view. Old sets are dropped by the next rebuild.
5. **verify**: after PROPAGATION_S, a last comparison with the old set closes any hole left by
   an event that was being handled while the pointer changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from cqrs_shared.viewsets import BUILD_LEASE_S, PROPAGATION_S

from projector_service.application.buffer import FoldBuffer
from projector_service.application.ports import HistoryFeed, Pointer, SetRegistry, ViewStore

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
LEASE_S = BUILD_LEASE_S  # a building set whose heartbeat is older belongs to a rebuild that died
COMPARE_CHUNK = 10_000
APPLY_ATTEMPTS = 8  # about a minute of backoff, then the rebuild fails (and can be run again)
# order documents folded in memory before they are written (about 3 KB each: about 180 MB)
BUFFER_ORDERS = 60_000
T = TypeVar("T")


class RebuildRefused(Exception):
    """Another rebuild is running (its heartbeat is fresh)."""


@dataclass
class Progress:
    view_set: str
    phase: str
    applied: int  # events applied to the new set by this rebuild
    watermark: int  # the new set's contiguous watermark
    target: int  # the highest position the live set has processed
    rate: float  # events/s since the start
    elapsed: float


@dataclass
class RebuildResult:
    view_set: str
    previous: str
    applied: int
    watermark: int
    elapsed: float
    dropped: list[str]

    @property
    def rate(self) -> float:
        return self.applied / self.elapsed if self.elapsed > 0 else 0.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Rebuilder:
    def __init__(self, registry: SetRegistry, feed: HistoryFeed, *, owner: str,
                 batch_size: int = 2000, idle_s: float = 0.3, buffer_orders: int = BUFFER_ORDERS,
                 grace_s: float = 30.0, rerequest_s: float = 30.0, propagation_s: float = PROPAGATION_S,
                 on_progress: Callable[[Progress], None] | None = None, progress_every_s: float = 1.0) -> None:
        self._registry = registry
        self._feed = feed
        self._owner = owner
        self._batch_size = batch_size
        self._buffer_orders = buffer_orders
        self._idle_s = idle_s
        self._grace_s = grace_s
        self._rerequest_s = rerequest_s
        self._propagation_s = propagation_s
        self._on_progress = on_progress
        self._progress_every_s = progress_every_s
        self._applied = 0
        self._started = 0.0
        self._requests = 0

    # ---- pointer -------------------------------------------------------------------------

    async def _register(self) -> tuple[Pointer, list[str]]:
        while True:
            ptr = await self._registry.read()
            now = _now()
            if ptr.building is not None and ptr.heartbeat_at is not None \
                    and now - ptr.heartbeat_at < timedelta(seconds=LEASE_S):
                raise RebuildRefused(f"set {ptr.building} is being rebuilt by {ptr.owner} "
                                     f"(heartbeat {ptr.heartbeat_at.isoformat()})")
            if ptr.retiring is not None and ptr.retire_until is not None:
                # a set is dropped only once no process can still be writing or reading it
                free_at = ptr.retire_until + timedelta(seconds=self._propagation_s)
                if now < free_at:
                    wait = (free_at - now).total_seconds()
                    log.info("set %r retires at %s; waiting %.1f s", ptr.retiring, ptr.retire_until, wait)
                    await asyncio.sleep(min(wait + 0.05, 5.0))
                    continue
            name = f"r{ptr.next_set}"  # never used before: names are only handed out here
            new = replace(ptr, generation=ptr.generation + 1, building=name, strict=False, owner=self._owner,
                          heartbeat_at=now, retiring=None, retire_until=None, next_set=ptr.next_set + 1)
            if not await self._registry.replace(new, ptr.generation):
                log.info("the pointer changed meanwhile; reading it again")
                continue
            # every other set (retired, or left by a rebuild that died) is read by no one
            dropped = await self._registry.drop_except({new.live, name})
            return new, dropped

    async def _change(self, ptr: Pointer, **changes: object) -> Pointer:
        new = replace(ptr, generation=ptr.generation + 1, **changes)  # type: ignore[arg-type]
        if not await self._registry.replace(new, ptr.generation):
            current = await self._registry.read()
            raise RebuildRefused(f"the pointer was changed by someone else (now {current}); set "
                                 f"{ptr.building} is abandoned")
        return new

    # ---- main loop -----------------------------------------------------------------------

    async def run(self) -> RebuildResult:
        self._started = time.monotonic()
        ptr, dropped = await self._register()
        name, previous = ptr.building, ptr.live
        assert name is not None
        new, old = self._registry.store(name), self._registry.store(previous)
        log.info("rebuilding into set %s (live set %r)", name, previous)
        heartbeat = asyncio.create_task(self._heartbeats(name))
        try:
            await self._request(1)
            await self._catch_up(new, old, "replay")
            ptr = await self._change(ptr, strict=True, heartbeat_at=_now())
            # the query indexes are built once the bulk of the history is in (much faster than
            # maintaining them during the load), and before any query can read the set: while
            # the strict pointer propagates, which takes a fixed time anyway
            started = time.monotonic()
            await asyncio.gather(self._registry.create_indexes(name), asyncio.sleep(self._propagation_s))
            log.info("indexes built and the strict pointer propagated in %.2f s", time.monotonic() - started)
            await self._catch_up(new, old, "strict")
            ptr = await self._change(ptr, live=name, building=None, strict=False, owner=None, heartbeat_at=None,
                                     retiring=previous, retire_until=_now() + timedelta(seconds=self._grace_s))
            log.info("set %s is live; set %r retires at %s", name, previous, ptr.retire_until)
            await asyncio.sleep(self._propagation_s)
            await self._catch_up(new, old, "verify")
        except BaseException:
            heartbeat.cancel()
            await self._abandon(ptr)
            raise
        finally:
            heartbeat.cancel()
        elapsed = time.monotonic() - self._started
        return RebuildResult(name, previous, self._applied, await new.advance_watermark(), elapsed, dropped)

    async def _abandon(self, ptr: Pointer) -> None:
        """After a failure before the switch: take the unfinished set out of the pointer (best
        effort; if this fails too, projectors stop writing it when its heartbeat is too old)."""
        if ptr.building is None:
            return  # already switched: the new set is live and complete up to the verify phase
        try:
            current = await self._registry.read()
            if current.building == ptr.building and current.owner == self._owner:
                await self._registry.replace(replace(current, generation=current.generation + 1, building=None,
                                                     strict=False, owner=None, heartbeat_at=None),
                                             current.generation)
                log.warning("rebuild failed: set %s abandoned, the live views are unchanged", ptr.building)
        except Exception as exc:
            log.warning("could not abandon set %s: %r", ptr.building, exc)

    async def _heartbeats(self, name: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._registry.heartbeat(name, self._owner, _now())
            except Exception as exc:  # the next one may work; the lease is LEASE_S long
                log.warning("heartbeat failed: %r", exc)

    async def _catch_up(self, new: ViewStore, old: ViewStore, phase: str) -> None:
        """Applies what the queue brings until the whole history has been delivered once (the
        end marker of a replay) and the new set has every position the old one has processed;
        requests a replay of the first missing position when the queue is dry."""
        buffer = FoldBuffer(new, max_orders=self._buffer_orders)
        # once the set is strict (after the replay phase), live projectors wait for, and retry,
        # an event whose predecessor is missing from it: then every batch is written at once,
        # so that the buffer never holds back what they wait for
        write_through = phase != "replay"
        spent = {"waiting": 0.0, "folding": 0.0}  # where the phase's time goes (logged at its end)
        try:
            await self._fold_history(new, old, phase, buffer, write_through, spent)
        finally:
            buffer.discard()  # after a failure: no early write goes on in the background

    async def _fold_history(self, new: ViewStore, old: ViewStore, phase: str, buffer: FoldBuffer,
                            write_through: bool, spent: dict[str, float]) -> None:
        last_request = time.monotonic()
        last_report = 0.0
        target = max(await old.watermark(), await old.last_processed())
        while True:
            # with every requested replay ended (its end marker comes after all its events), what
            # is not in the inbox now will not come: no need to wait for the queue to stay dry
            outstanding = self._requests - len(self._feed.replay_ends)
            t0 = time.monotonic()
            batch = await self._feed.next_batch(self._batch_size, self._idle_s if outstanding > 0 else 0.0)
            t1 = time.monotonic()
            spent["waiting"] += t1 - t0
            if batch is not None:
                await self._apply(buffer, batch)
                spent["folding"] += time.monotonic() - t1
                if buffer.full or write_through:
                    await self._flush(buffer)
                if time.monotonic() - last_report >= self._progress_every_s:
                    last_report = time.monotonic()
                    target = max(target, await old.last_processed())
                    self._report(new.name, phase, await new.watermark(), target)
                continue
            await self._flush(buffer)
            missing, watermark = await self._first_missing(new, old)
            target = max(target, await old.last_processed())
            self._report(new.name, phase, watermark, target)
            outstanding = self._requests - len(self._feed.replay_ends)  # replays not finished yet
            if missing is None and outstanding <= 0:
                log.info("%s phase: %.2f s taking and parsing history, %.2f s folding it", phase, spent["waiting"],
                         spent["folding"])
                return
            if outstanding > 0 and time.monotonic() - last_request < self._rerequest_s:
                continue  # a replay is on its way (the command service may be busy): wait for it
            start = missing if missing is not None else watermark + 1
            log.info("set %s lacks position %d: asking for the history from there", new.name, start)
            await self._request(start)
            last_request = time.monotonic()

    async def _request(self, from_position: int) -> None:
        self._requests += 1
        await self._feed.request(from_position)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call` (idempotent) again after a failure (database unavailable), with backoff;
        after APPLY_ATTEMPTS the rebuild fails (and can be run again)."""
        delay = 0.2
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                return await call()
            except Exception as exc:
                if attempt == APPLY_ATTEMPTS:
                    raise
                log.warning("%s failed (%r); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    async def _apply(self, buffer: FoldBuffer, batch: object) -> None:
        """Folds a batch into the buffer and acknowledges its messages: from then on the
        buffer holds its events (a rebuild that dies loses its set anyway; a redelivery folds
        as duplicates)."""
        events = batch.events  # type: ignore[attr-defined]
        started = time.monotonic()
        result = await self._retrying("reading the orders of a batch", lambda: buffer.add(events)) if events else None
        invalid = [(e, str(exc)) for e, exc in result.invalid] if result else []
        await batch.done(invalid)  # type: ignore[attr-defined]
        log.debug("batch of %d event(s) folded in %.3f s", len(events), time.monotonic() - started)
        if result:
            self._applied += len(result.done)

    async def _flush(self, buffer: FoldBuffer) -> None:
        if not buffer:
            return
        started, orders = time.monotonic(), buffer.orders
        unwritten = await self._retrying("writing the folded views", buffer.flush)
        log.info("wrote %d order document(s) in %.2f s", orders, time.monotonic() - started)
        if unwritten:  # the comparison asks for them again
            log.info("%d position(s) lost to other writers; they will be replayed", len(unwritten))

    async def _first_missing(self, new: ViewStore, old: ViewStore) -> tuple[int | None, int]:
        """The first position the old set has processed and the new one has not (or None),
        and the new set's watermark. The old set is always read before the new one: under
        load, what the old set had then is in the new one by now, so the answer settles."""
        old_watermark = await old.watermark()
        watermark = await new.advance_watermark()
        if watermark < old_watermark:
            return watermark + 1, watermark  # processed in the old set (its watermark says so)
        after = watermark
        while True:
            theirs = await old.processed_after(after, COMPARE_CHUNK)
            if not theirs:
                return None, watermark
            ours = set(await new.processed_after(after, None, upto=theirs[-1]))
            for p in theirs:
                if p not in ours:
                    return p, watermark
            after = theirs[-1]

    def _report(self, name: str, phase: str, watermark: int, target: int) -> None:
        if self._on_progress is None:
            return
        elapsed = time.monotonic() - self._started
        self._on_progress(Progress(name, phase, self._applied, watermark, target,
                                   self._applied / elapsed if elapsed > 0 else 0.0, elapsed))
