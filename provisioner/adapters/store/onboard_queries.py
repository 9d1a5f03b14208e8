"""Onboarding rows: requests with compare-and-set transitions, their logs, approved host keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import onboard_host_keys, onboard_log, onboard_requests
from provisioner.onboard_models import (
    LIVE_ONBOARD_STATES,
    OnboardLogLine,
    OnboardRequest,
    OnboardStage,
    OnboardState,
    PinnedHostKey,
)

LIVE = sorted(state.value for state in LIVE_ONBOARD_STATES)
_FIELDS = tuple(f.name for f in fields(OnboardRequest))


def _to_request(row: sa.Row[Any]) -> OnboardRequest:
    """Map a request row to the domain record."""
    values = {name: row._mapping[name] for name in _FIELDS}
    values["state"] = OnboardState(values["state"])
    values["stage"] = OnboardStage(values["stage"])
    return OnboardRequest(**values)


def _plain(value: Any) -> Any:
    """Enum members as their stored strings."""
    return value.value if isinstance(value, OnboardState | OnboardStage) else value


class OnboardQueries(QueriesBase):
    """Queries on onboard_requests, onboard_log and onboard_host_keys."""

    async def insert_onboard(self, request: OnboardRequest) -> None:
        """Store a new onboarding request."""
        values = {name: _plain(value) for name, value in asdict(request).items()}
        await self.conn.execute(onboard_requests.insert().values(**values))

    async def get_onboard(self, request_id: str) -> OnboardRequest | None:
        """The request with this id."""
        query = onboard_requests.select().where(onboard_requests.c.id == request_id)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _to_request(row)

    async def list_onboard(
        self,
        *,
        requested_by: str | None,
        state: OnboardState | None,
        after: str | None,
        limit: int,
    ) -> list[OnboardRequest]:
        """Requests in id (creation) order, after the id `after`."""
        table = onboard_requests
        query = table.select().order_by(table.c.id).limit(limit)
        if requested_by is not None:
            query = query.where(table.c.requested_by == requested_by)
        if state is not None:
            query = query.where(table.c.state == state.value)
        if after is not None:
            query = query.where(table.c.id > after)
        return [_to_request(row) for row in await self.conn.execute(query)]

    async def onboard_created_since(
        self, since: datetime, *, requested_by: str | None = None, host: str | None = None
    ) -> list[datetime]:
        """Creation times of this requester's (or this host's) requests since `since`."""
        table = onboard_requests
        query = sa.select(table.c.created_at).where(table.c.created_at >= since)
        if requested_by is not None:
            query = query.where(table.c.requested_by == requested_by)
        if host is not None:
            query = query.where(table.c.host == host)
        return list((await self.conn.execute(query.order_by(table.c.created_at))).scalars())

    async def update_onboard(
        self,
        request_id: str,
        *,
        expect: frozenset[OnboardState],
        at_stage: frozenset[OnboardStage] | None = None,
        fingerprint: str | None = None,
        lapsed_before: datetime | None = None,
        **changes: Any,
    ) -> OnboardRequest | None:
        """Compare-and-set: change the request only if state, stage, fingerprint, lease match."""
        table = onboard_requests
        guard = [table.c.id == request_id, table.c.state.in_(sorted(s.value for s in expect))]
        if at_stage is not None:
            guard.append(table.c.stage.in_(sorted(s.value for s in at_stage)))
        if fingerprint is not None:
            guard.append(table.c.presented_fingerprint == fingerprint)
        if lapsed_before is not None:
            guard.append(table.c.lease_until < lapsed_before)
        values = {name: _plain(value) for name, value in changes.items()}
        result = await self.conn.execute(table.update().where(*guard).values(**values))
        return await self.get_onboard(request_id) if result.rowcount == 1 else None

    async def held_onboard(self, holder: str) -> list[OnboardRequest]:
        """The live requests whose password `holder` has in memory."""
        table = onboard_requests
        query = table.select().where(table.c.holder == holder, table.c.state.in_(LIVE))
        return [_to_request(row) for row in await self.conn.execute(query.order_by(table.c.id))]

    async def renew_onboard_leases(self, holder: str, until: datetime) -> None:
        """Extend the lease of every live request `holder` holds."""
        table = onboard_requests
        await self.conn.execute(
            table.update()
            .where(table.c.holder == holder, table.c.state.in_(LIVE))
            .values(lease_until=until)
        )

    async def lapsed_onboard(self, now: datetime, limit: int) -> list[OnboardRequest]:
        """Live requests whose holder stopped renewing their lease."""
        table = onboard_requests
        query = (
            table.select()
            .where(table.c.state.in_(LIVE), table.c.lease_until < now)
            .order_by(table.c.id)
            .limit(limit)
        )
        return [_to_request(row) for row in await self.conn.execute(query)]

    async def append_onboard_log(self, request_id: str, lines: Sequence[str], at: datetime) -> None:
        """Append lines to a request's log."""
        if lines:
            rows = [{"request_id": request_id, "at": at, "line": line} for line in lines]
            await self.conn.execute(onboard_log.insert(), rows)

    async def onboard_log(self, request_id: str, *, after: int, limit: int) -> list[OnboardLogLine]:
        """A request's log lines after the id `after`, oldest first."""
        table = onboard_log
        query = (
            sa.select(table.c.id, table.c.at, table.c.line)
            .where(table.c.request_id == request_id, table.c.id > after)
            .order_by(table.c.id)
            .limit(limit)
        )
        return [OnboardLogLine(*row) for row in await self.conn.execute(query)]

    async def onboard_pin(self, host: str, port: int) -> PinnedHostKey | None:
        """The host key ops approved for this host, if any."""
        table = onboard_host_keys
        query = table.select().where(table.c.host == host, table.c.port == port)
        row = (await self.conn.execute(query)).first()
        return None if row is None else PinnedHostKey(**row._mapping)

    async def set_onboard_pin(self, pin: PinnedHostKey) -> None:
        """Pin (or re-pin) the host key of a host."""
        table = onboard_host_keys
        values = asdict(pin)
        where = [table.c.host == pin.host, table.c.port == pin.port]
        result = await self.conn.execute(table.update().where(*where).values(**values))
        if result.rowcount == 0:
            await self.conn.execute(table.insert().values(**values))
