"""Group commit: commands that arrive while a transaction is in progress are run together in
the next one (one BEGIN/COMMIT and one position counter lock window for the whole group).

- One group transaction at a time per process; a command that arrives when none is running
  starts one at once (a lone command waits for nothing).
- The commands of a group run one after the other in the order they arrived, each seeing the
  effects of the ones before it (its reads come after their writes in the same transaction),
  so each command's rules decide exactly as they would one by one in that order.
- A rejection (DomainError) is raised before the command writes anything (state changes are
  buffered until its append), so it affects no other command of the group; the rejected
  command's reply is stored afterwards, as without grouping.
- Any other exception (a repeated commandId's unique violation, a deadlock, a lost
  connection, a bug) rolls the whole group back; then every command of the group runs again
  on its own, in its own transaction with the usual retries, one after the other in arrival
  order, as without grouping.
- Positions: each accepted command takes its positions from the counter in order; the
  counter's row lock is held until the group commits, so positions stay gap-free and in
  commit order.
- Each command runs in its caller's context (log fields, the trace continued by the relay).
- A group made of PlaceOrders only (each submitted with its `prefetch` key: customer id,
  product ids, order id) locks and reads all their customers and products in one statement
  first, customers then products in id order (the order a single PlaceOrder locks in, so
  groups and single commands never deadlock each other), and its commands read those rows
  instead of the database (CommandStore.in_one_transaction).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from command_service.application.ports import CommandStore, Tx
from command_service.domain.model import DomainError

log = logging.getLogger("command_service")

Work = Callable[[Tx], Awaitable[dict[str, Any]]]
Prefetch = tuple[str, list[str], str | None]


class _Rejected:
    __slots__ = ("error",)

    def __init__(self, error: DomainError) -> None:
        self.error = error


_ALONE = object()  # the group failed: run the command on its own


class GroupCommit:
    def __init__(self, store: CommandStore, max_group: int = 32) -> None:
        self._store = store
        self._max = max_group
        self._pending: list[tuple[Work, Prefetch | None, contextvars.Context, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.groups = 0  # transactions run, and commands in them (for tests and metrics)
        self.grouped = 0
        self.fallbacks = 0

    async def run(self, work: Work, prefetch: Prefetch | None = None) -> dict[str, Any]:
        """The reply of `work`, run in a group transaction; raises its DomainError.
        `prefetch`: for a PlaceOrder, its (customer id, product ids, order id or None)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((work, prefetch, contextvars.copy_context(), fut))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        outcome = await fut
        if outcome is _ALONE:
            return await self._store.in_transaction(work)
        if isinstance(outcome, _Rejected):
            raise outcome.error
        return outcome

    async def idle(self) -> None:
        """Returns once no group transaction is running (at shutdown, before the pool closes)."""
        while self._task is not None:
            await asyncio.wait([self._task])

    async def _drain(self) -> None:
        group: list[tuple[Work, Prefetch | None, contextvars.Context, asyncio.Future]] = []
        try:
            while self._pending:
                group, self._pending = self._pending[:self._max], self._pending[self._max:]
                keys = [key for _, key, _, _ in group]
                prefetch = keys if all(key is not None for key in keys) else None
                try:
                    outcomes = await self._store.in_one_transaction(
                        [self._guarded(w, ctx) for w, _, ctx, _ in group], prefetch)
                    self.groups += 1
                    self.grouped += len(group)
                except Exception as exc:  # noqa: BLE001 - every command is run again on its own
                    if len(group) > 1:
                        self.fallbacks += 1
                        log.info("group of %d commands rolled back (%s); running them one by one",
                                 len(group), type(exc).__name__)
                    await self._one_by_one(group)
                    group = []
                    continue
                for (_, _, _, fut), outcome in zip(group, outcomes):
                    if not fut.done():
                        fut.set_result(outcome)
                group = []
        finally:
            # cancelled (shutdown): whoever still waits runs on its own
            for _, _, _, fut in group + self._pending:
                if not fut.done():
                    fut.set_result(_ALONE)
            self._pending = []
            self._task = None

    async def _one_by_one(self, group: list[tuple[Work, Prefetch | None, contextvars.Context, asyncio.Future]]) -> None:
        """After a group failed: each command in a transaction of its own (with the usual
        retries), in arrival order, as without grouping; so of two commands with the same
        commandId the one that arrived first is the one stored."""
        for work, _, ctx, fut in group:
            if fut.done():
                continue
            try:
                outcome = await asyncio.create_task(self._store.in_transaction(work), context=ctx)
            except DomainError as exc:
                fut.set_result(_Rejected(exc))
            except Exception as exc:  # noqa: BLE001 - the caller gets it (e.g. ReplyExists)
                fut.set_exception(exc)
            else:
                fut.set_result(outcome)

    @staticmethod
    def _guarded(work: Work, ctx: contextvars.Context) -> Callable[[Tx], Awaitable[Any]]:
        async def run(tx: Tx) -> Any:
            try:
                return await asyncio.create_task(work(tx), context=ctx)
            except DomainError as exc:
                return _Rejected(exc)
        return run
