"""The tailnet's part of the composition root: which backend, how workspaces join, reconciling."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from acl.policy import PolicyConfig
from acl.publisher import PolicyPublisher, StoreOwners
from provisioner.adapters.headscale import HeadscaleTailnet
from provisioner.adapters.tailscale import TailscaleTailnet
from provisioner.models import SYSTEM_ACTOR
from provisioner.ports import Store, Tailnet
from provisioner.settings import Settings, TailnetSettings
from provisioner.step_context import TailnetJoin
from provisioner.tailnet_reconcile import TailnetReconciler

log = logging.getLogger(__name__)
KNOWN_TAGS_SECONDS = 60.0  # how long tags seen defined in the live policy are taken as still so
# What a Tailscale OAuth client of ours needs: mint keys, manage devices, write the policy.
OAUTH_SCOPES = ("auth_keys", "devices:core", "policy_file")


def build_tailnet(settings: TailnetSettings | None) -> Tailnet | None:
    """The configured tailnet backend, or None when Tailscale and Headscale are off."""
    if settings is None:
        return None
    if settings.kind == "headscale":
        assert settings.api_key is not None  # settings refuse a Headscale without a key
        return HeadscaleTailnet(
            base_url=settings.api_url,
            api_key=settings.api_key,
            magic_dns_domain=settings.base_domain,
        )
    return TailscaleTailnet(
        base_url=settings.api_url,
        api_key=settings.api_key,
        oauth_client_id=settings.oauth_client_id,
        oauth_client_secret=settings.oauth_client_secret,
        oauth_scopes=OAUTH_SCOPES if settings.oauth_client_id else (),
        oauth_tags=(settings.own_tag,) if settings.oauth_client_id else (),
        tailnet=settings.tailnet,
    )


def tailnet_join(settings: TailnetSettings | None) -> TailnetJoin:
    """How workspaces join the tailnet, from the settings."""
    if settings is None:
        return TailnetJoin()
    return TailnetJoin(
        base_tags=settings.tags,
        key_expiry_seconds=int(settings.key_expiry.total_seconds()),
        timeout=settings.join_timeout.total_seconds(),
        required=settings.join == "required",
    )


def tailnet_reconciler(
    settings: Settings, store: Store, tailnet: Tailnet | None, clock: Callable[[], datetime]
) -> TailnetReconciler | None:
    """Device reconciliation, when there is a tailnet and base tags that mark our devices."""
    if tailnet is None or settings.tailnet is None:
        return None
    if not settings.tailnet.tags:
        log.warning(
            "tailnet devices are not reconciled: set PROVISIONER_TAILSCALE_TAGS "
            "(e.g. tag:provisioner-workspace) so that our devices can be told from others"
        )
        return None
    return TailnetReconciler(
        store, tailnet, clock, our_tags=settings.tailnet.tags, grace=settings.orphan_grace
    )


def policy_publisher(
    settings: Settings, store: Store, tailnet: Tailnet | None, clock: Callable[[], datetime]
) -> PolicyPublisher:
    """render, diff and push of the tailnet policy, from the settings."""
    ts = settings.tailnet
    config = PolicyConfig(groups=settings.groups, ops_group=settings.ops_group)
    if ts is not None:
        config = replace(
            config, provisioner_tag=ts.own_tag, node_tags=ts.node_tags, workspace_tags=ts.tags
        )
    return PolicyPublisher(
        config,
        StoreOwners(store),
        store,
        clock,
        tailnet=tailnet,
        base_path=ts.acl_base if ts else None,
    )


class PolicyTags:
    """TagPolicy through the policy publisher, remembering for a minute which tags exist."""

    def __init__(
        self, publisher: PolicyPublisher, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._publisher, self._clock = publisher, clock
        self._known: set[str] = set()
        self._known_at = -KNOWN_TAGS_SECONDS

    async def ensure_tags(self, tags: Sequence[str]) -> None:
        """Push the policy when the live one lacks one of `tags` (once a minute at most, if not)."""
        now = self._clock()
        if now - self._known_at >= KNOWN_TAGS_SECONDS:
            self._known.clear()
        if set(tags) <= self._known:
            return
        if await self._publisher.ensure_tags(tags, SYSTEM_ACTOR):
            log.info("tailnet policy pushed: it lacked one of %s", " ".join(tags))
        self._known |= set(tags)
        self._known_at = now
