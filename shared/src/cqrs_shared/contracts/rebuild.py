"""Rebuild requests on `cqrs.internal` (`projector.rebuild`): internal, not part of the public
contract (docs/protocol.md, "Rebuild requests").

The requester publishes a `RebuildRequest` with `reply_to` and `correlation_id`; the projector
replica that takes it sends, to `reply_to` with that `correlation_id`, one JSON message
`{"type": "accepted"}`, then `{"type": "progress", ...}` messages (at least every
`KEEPALIVE_S` while the rebuild runs), then exactly one `{"type": "result", "status": ...}`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# a replica repeats its latest progress at least this often, so a requester can tell a
# rebuild that runs from a replica that has gone
KEEPALIVE_S = 5.0

# result statuses
SWITCHED = "switched"  # the new set is live
REFUSED = "refused"  # another rebuild is running (error.code REBUILD_RUNNING)
FAILED = "failed"  # the rebuild stopped before it could switch (live views unchanged) or after
REJECTED = "rejected"  # the request is invalid (error.code validation_error); nothing was done
EXPIRED = "expired"  # taken after its x-deadline: the requester had given up; nothing was done

REBUILD_RUNNING = "rebuild_running"
REBUILD_FAILED = "rebuild_failed"


class RebuildRequest(BaseModel):
    """Unknown fields are ignored. `views`: only `all` (the views share one watermark and are
    rebuilt together). `graceSeconds`: how long the previous set is still written after the
    switch (default: the projector's REBUILD_GRACE_SECONDS)."""

    model_config = ConfigDict(extra="ignore")
    views: Literal["all"] = "all"
    graceSeconds: Annotated[float, Field(ge=0, le=3600)] | None = None
