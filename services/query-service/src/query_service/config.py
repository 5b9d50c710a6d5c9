from __future__ import annotations

from cqrs_shared.settings import CommonSettings


class QuerySettings(CommonSettings):
    # how often the shared poller reads the watermark while queries wait for a minPosition
    watermark_poll_ms: float = 5.0
