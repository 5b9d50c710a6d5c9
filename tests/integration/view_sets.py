"""Helpers of the rebuild tests: a stack that sends commands and waits for the views, and the
comparison of two collection sets of the views."""

from __future__ import annotations

from cqrs_shared.viewsets import VIEW_COLLECTIONS, collection


async def assert_view_sets_equal(db, old: str, new: str) -> None:
    """Every view of collection set `new` equals set `old`, document for document."""
    async def dump(name: str) -> list[dict]:
        return sorted([d async for d in db[name].find({})], key=lambda d: str(d["_id"]))

    for base in VIEW_COLLECTIONS:
        assert await dump(collection(base, new)) == await dump(collection(base, old)), base


class CommandStack:
    """Sends commands that must be accepted and remembers the highest position, so that
    `settled()` can wait until the views have applied everything sent."""

    def __init__(self, client, db) -> None:
        self.client, self.db = client, db
        self.position = 0

    async def command(self, cmd: dict) -> dict:
        reply = await self.client.send_command(cmd)
        assert reply["status"] == "accepted", reply
        self.position = max(self.position, reply["position"])
        return reply

    async def settled(self) -> dict:
        reply = await self.client.query({"queryType": "SearchOrders", "parameters": {"pageSize": 1},
                                         "minPosition": self.position, "maxWaitMs": 20000})
        assert reply["status"] == "ok", reply
        return reply
