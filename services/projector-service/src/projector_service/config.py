from __future__ import annotations

from cqrs_shared.settings import CommonSettings


class ProjectorSettings(CommonSettings):
    # on start, ask the command service for the events after the watermark
    catch_up_on_start: bool = True
    # an event whose predecessor is missing waits this long in the process (re-reading the
    # view) before it goes to the retry queue; 0 sends it to the retry queue at once
    out_of_order_wait_ms: float = 2000.0
    # rebuild: events applied per batch, events per replayed message, messages in flight, how
    # long the previous set is still written after the switch (queries holding the old
    # pointer keep a complete view)
    rebuild_batch: int = 2000
    # rebuild: order documents folded in memory before they are written (about 3 KB each,
    # so about 180 MB)
    rebuild_buffer_orders: int = 60_000
    rebuild_per_message: int = 100
    rebuild_prefetch: int = 40
    rebuild_grace_seconds: float = 30.0
