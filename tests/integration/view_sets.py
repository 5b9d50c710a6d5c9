"""Comparing two collection sets of the views (rebuild tests)."""

from __future__ import annotations

from cqrs_shared.viewsets import VIEW_COLLECTIONS, collection


async def assert_view_sets_equal(db, old: str, new: str) -> None:
    """Every view of collection set `new` equals set `old`, document for document."""
    async def dump(name: str) -> list[dict]:
        return sorted([d async for d in db[name].find({})], key=lambda d: str(d["_id"]))

    for base in VIEW_COLLECTIONS:
        assert await dump(collection(base, new)) == await dump(collection(base, old)), base
