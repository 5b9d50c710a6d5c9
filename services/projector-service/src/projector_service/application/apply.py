"""Applies a batch of events to one collection set with few round trips: one read of the order
documents the batch touches, one bulk write of the folded orders (version-guarded), one bulk
write of the reference views, one insert of the processed positions."""

from __future__ import annotations

from dataclasses import dataclass, field

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.application.ports import ViewStore
from projector_service.domain.fold import fold_order, fold_references, group_orders
from projector_service.domain.orders import ORDER_EVENTS, InvalidEvent

CONFLICT_ROUNDS = 5


@dataclass
class Applied:
    done: list[EventEnvelope] = field(default_factory=list)  # in the views now, marked processed
    blocked: list[EventEnvelope] = field(default_factory=list)  # an earlier version is missing
    invalid: list[tuple[EventEnvelope, InvalidEvent]] = field(default_factory=list)
    changed: bool = False  # some view document was written
    written: set[str] = field(default_factory=set)  # the order ids whose document was written


async def apply_events(store: ViewStore, events: list[EventEnvelope], *, record: bool = False,
                       mark: bool = True) -> Applied:
    """`record`: the processed positions are recorded through the watermark where they are
    contiguous with it (one write instead of one document per event; for batches that come in
    position order, i.e. the rebuild), else one `processed` document per event. `mark=False`:
    the positions of `done` are not recorded here; the caller records them (the live
    projector batches them over concurrent handlers)."""
    out = Applied()
    pending = group_orders(events)
    done = [e for e in events if e.eventType not in ORDER_EVENTS]
    first_round = True
    for _ in range(CONFLICT_ROUNDS):
        if not pending:
            break
        # an order whose batch starts with its first version needs no read in the first round:
        # if it exists after all, the insert fails and the next round reads it
        to_read = [oid for oid, evs in pending.items()
                   if not first_round or min(e.version for e in evs) != 1]
        first_round = False
        current = await store.get_orders(to_read)
        folds = {oid: fold_order(current.get(oid), evs) for oid, evs in pending.items()}
        lost = await store.write_orders([(f.write, f.expected_version) for f in folds.values() if f.write])
        for oid, f in folds.items():
            if oid in lost:
                continue  # another writer got there first: fold again on what it wrote
            done.extend(f.done)
            out.blocked.extend(f.blocked)
            out.invalid.extend(f.invalid)
            if f.write is not None:
                out.changed = True
                out.written.add(oid)
        pending = {oid: pending[oid] for oid in lost}
    for evs in pending.values():  # still losing after several rounds: deliver again later
        out.blocked.extend(evs)
    refs = fold_references(done)
    if refs:
        await store.write_references(refs.customers, refs.product_info, refs.product_stock)
        out.changed = True
    if done and mark:
        positions = sorted({e.position for e in done})
        if record:
            await store.record_processed(positions)
        else:
            await store.mark_processed(positions)
    out.done = done
    return out
