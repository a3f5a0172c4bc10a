"""The port through which services start background work now, instead of waiting for its
schedule. Services see only this protocol on the context (`ctx.jobs`); workers/broker.py
implements it over taskiq and plugs it in (`attach_jobs`). Starting a job never raises: every
job also runs on its schedule, which picks up whatever a start missed.
"""

from __future__ import annotations

from typing import Protocol


class JobQueue(Protocol):
    async def deliver_outbox(self) -> bool:
        """Send the e-mail outbox now (call after the transaction that wrote to it commits);
        False when the job could not be started."""
        ...

    async def deliver_webhooks(self) -> bool:
        """Send the pending webhook deliveries now (after the commit that queued them)."""
        ...
