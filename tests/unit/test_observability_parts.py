"""Small parts of the observability code that need no server: projection lag bookkeeping,
bounded metric labels and the OTEL_TRACES_EXPORTER parsing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cqrs_shared import metrics, tracing
from projector_service.adapters.progress import ProjectionProgress


def test_lag_counts_received_events_above_the_watermark_and_the_age_of_the_oldest():
    progress = ProjectionProgress(views=("unit-view",))
    now = datetime.now(timezone.utc)
    progress.advanced(10)
    progress.received(12, now - timedelta(seconds=30))
    progress.received(11, now - timedelta(seconds=40))
    progress.received(13, now - timedelta(seconds=5))
    assert progress.lag_events() == 3
    assert 39 <= progress.lag_seconds() < 60
    assert metrics.PROJECTION_LAG_EVENTS.labels("unit-view")._value.get() == 3
    progress.advanced(11)  # 11 applied: the oldest pending is now 12
    assert progress.lag_events() == 2
    assert 29 <= progress.lag_seconds() < 40
    progress.advanced(13)
    assert progress.lag_events() == 0 and progress.lag_seconds() == 0
    assert metrics.PROJECTION_POSITION.labels("unit-view")._value.get() == 13
    progress.received(5, now)  # a replayed event below the watermark changes nothing
    assert progress.lag_events() == 0 and progress.lag_seconds() == 0


def test_labels_stay_bounded():
    assert metrics.label("PlaceOrder", {"PlaceOrder"}) == "PlaceOrder"
    assert metrics.label("x" * 300, {"PlaceOrder"}) == "other"
    assert metrics.label(None, ("a",)) == "other"


def test_unknown_exporter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        tracing.configure("unit")


def test_no_exporter_by_default_installs_nothing(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.configure("unit") is False
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.configure("unit") is False


async def test_the_live_sets_watermark_is_announced_after_it_is_written_and_others_are_not():
    from projector_service.adapters.progress import ObservedViewStore

    class Store:
        def __init__(self, name: str, value: int) -> None:
            self.name, self.value, self.written = name, value, False

        async def advance_watermark(self) -> int:
            self.written = True
            return self.value

    announced = []
    live = {"name": "r2"}

    async def announce(view_set: str, position: int) -> None:
        assert stores[view_set].written  # only after the watermark document was written
        announced.append((view_set, position))

    stores = {"r2": Store("r2", 40), "r3": Store("r3", 12)}
    progress = ProjectionProgress(views=("unit-view-2",))
    observed = {n: ObservedViewStore(s, progress, when=lambda s=s: s.name == live["name"], announce=announce)
                for n, s in stores.items()}
    assert await observed["r2"].advance_watermark() == 40
    assert await observed["r3"].advance_watermark() == 12  # the set being built: not announced
    live["name"] = "r3"
    await observed["r3"].advance_watermark()
    assert announced == [("r2", 40), ("r3", 12)]
