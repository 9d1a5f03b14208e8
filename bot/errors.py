"""The Slack edge's one error boundary: core errors become a short private message."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError

from provisioner.errors import InfrastructureError, ProvisionerError

log = logging.getLogger(__name__)
Tell = Callable[[str], Awaitable[None]]


async def guarded(work: Awaitable[None], tell: Tell) -> None:
    """Run `work`; tell the user what went wrong and what to do, never a traceback."""
    try:
        await work
    except InfrastructureError as error:
        log.warning("slack request failed: %s", error.message)
        await tell(f":warning: {error.message}. Please try again in a minute.")
    except ProvisionerError as error:
        await tell(f":warning: {error.message}")
    except SlackApiError as error:
        log.warning("Slack refused a call: %s", error.response.get("error"))
        await tell(":warning: Slack refused part of this request; please try again.")
