"""The query service's watermark reads: concurrent queries share one read, later ones read
again, and waiters are released once the watermark reaches their position."""

from __future__ import annotations

import asyncio


from query_service.application.watermark import WatermarkWatcher


class SlowWatermark:
    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.fail = False

    async def __call__(self) -> int:
        self.reads += 1
        value = self.value  # the value when the read reached the database
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("database down")
        return value


async def test_concurrent_readers_share_one_read_and_later_ones_read_again():
    source = SlowWatermark()
    source.value = 7
    watcher = WatermarkWatcher(source, interval=0.001)
    assert await asyncio.gather(*(watcher.current() for _ in range(50))) == [7] * 50
    assert source.reads == 1
    source.value = 9
    assert await watcher.current() == 9  # a read started after the first one ended
    assert source.reads == 2


async def test_a_failed_read_fails_its_sharers_and_the_next_read_is_new():
    source = SlowWatermark()
    source.fail = True
    watcher = WatermarkWatcher(source, interval=0.001)
    results = await asyncio.gather(*(watcher.current() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and source.reads == 1
    source.fail, source.value = False, 4
    assert await watcher.current() == 4


async def test_waiters_are_released_when_the_watermark_reaches_them():
    source = SlowWatermark()
    watcher = WatermarkWatcher(source, interval=0.001)
    waiting = asyncio.gather(watcher.wait_for(3, 2.0), watcher.wait_for(5, 2.0))
    await asyncio.sleep(0.03)
    source.value = 5
    assert await waiting == [5, 5]
    assert await watcher.wait_for(6, 0.05) is None  # never reached: times out
    await watcher.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_notifications_keep_the_highest_watermark_per_set_while_fresh():
    from query_service.application.watermark import Notifications

    clock = Clock()
    n = Notifications(fresh_s=2.0, clock=clock)
    assert n.fresh("") is None and not n.arriving()
    n.note("", 7)
    n.note("", 5)  # an older announcement (another replica, a heartbeat) never lowers it
    n.note("r2", 3)
    assert (n.fresh(""), n.fresh("r2"), n.fresh("r3")) == (7, 3, None)
    clock.now += 1.5
    n.note("r2", 4)
    clock.now += 1.0  # "" last heard 2.5 s ago: stale, read the database instead
    assert (n.fresh(""), n.fresh("r2")) == (None, 4) and n.arriving()
    clock.now += 2.5
    assert n.fresh("r2") is None and not n.arriving()


async def test_a_poke_wakes_the_waiters_without_waiting_for_the_next_poll():
    """With notifications arriving the poller checks only every `notified_interval` (here far
    longer than the test's bound): the waiter is released by the poke, not by a poll."""
    source = SlowWatermark()
    watcher = WatermarkWatcher(source, interval=0.001, notified=lambda: True, notified_interval=60)
    waiting = asyncio.ensure_future(watcher.wait_for(5, 30))
    await asyncio.sleep(0.05)
    reads = source.reads
    source.value = 5
    watcher.poke()
    assert await asyncio.wait_for(waiting, 10) == 5
    assert source.reads == reads + 1
    await watcher.close()
