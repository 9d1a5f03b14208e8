"""Composition root: builds adapters from settings, hands them to the core and the edges; serves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from acl.publisher import PolicyPublisher
from api.app import ApiOptions, ApiServices, build_app
from api.onboard import ONBOARD_KEY
from bot.app import SlackBot, SlackCredentials
from bot.deps import BotConfig
from provisioner.adapters.ansible import AnsiblePlaybookRunner
from provisioner.adapters.cloudinit import CloudInitSeeds
from provisioner.adapters.keyfiles import ensure_keypair, write_key_from_base64
from provisioner.adapters.libvirt import LibvirtHypervisor
from provisioner.adapters.store.engine import SqlStore
from provisioner.app import http_processes
from provisioner.app.onboarding import build_onboarding
from provisioner.app.tailnet import (
    PolicyTags,
    build_tailnet,
    policy_publisher,
    tailnet_join,
    tailnet_reconciler,
)
from provisioner.approvals import Approvals
from provisioner.audit import AuditTrail
from provisioner.catalog import Catalog
from provisioner.conversations import Conversations
from provisioner.fleet import AccessFactory, Fleet, NodeAccess
from provisioner.images import Images
from provisioner.keys import SshKeys
from provisioner.metrics import Metrics
from provisioner.models import SYSTEM_ACTOR, Node, Role
from provisioner.onboard_runner import OnboardRunner
from provisioner.onboarding import Onboarding
from provisioner.operations import OperationRunner
from provisioner.playbook_admin import Playbooks
from provisioner.playbooks import PlaybookCatalog
from provisioner.ports import HostKeyReporter, HostKeySighting, Tailnet
from provisioner.reconcile import Reconciler
from provisioner.requests import Defaults
from provisioner.service import Provisioner
from provisioner.settings import Settings
from provisioner.step_context import GuestLogin, PlaybookTools, StepContexts, Timeouts
from provisioner.tokens import Tokens

log = logging.getLogger("provisioner")
# Client, request line, status, bytes, seconds taken. The log line already carries the time and
# the request id; aiohttp's default format adds a second timestamp, formatted per request.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'

DRAIN_SECONDS = 20.0
UPKEEP_SECONDS = 60
UPKEEP_AT_START = 15.0
CLI_TOKEN_FILE = "cli-token"  # noqa: S105 (a file name, not a secret)


def now() -> datetime:
    """The clock of the whole process, in UTC."""
    return datetime.now(UTC)


def node_access(settings: Settings, reporter: HostKeyReporter) -> AccessFactory:
    """How to reach a node: in-process test driver, local libvirt, or libvirt over SSH."""
    identity = settings.data_dir / "keys" / "id_ed25519"

    def build(node: Node) -> NodeAccess:
        if not node.ssh_host:
            return NodeAccess(LibvirtHypervisor(node))
        key = identity
        if node.ssh_key == "env:SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED":
            assert settings.compat_node_key is not None
            key = write_key_from_base64(
                settings.data_dir / "keys" / f"{node.name}_ed25519", settings.compat_node_key
            )
        elif node.ssh_key:
            key = Path(node.ssh_key)
        # Imported here: asyncssh costs ~30 MB, which a fleet without SSH nodes need not pay.
        from provisioner.adapters.ssh import SshLink

        link = SshLink(node, client_key=key, guest_key=identity, reporter=reporter)
        return NodeAccess(LibvirtHypervisor(node, link=link), link)

    return build


@dataclass
class System:
    """Everything built from settings, ready to serve or to answer one CLI command."""

    settings: Settings
    store: SqlStore
    fleet: Fleet
    metrics: Metrics
    runner: OperationRunner
    core: Provisioner
    images: Images
    reconciler: Reconciler
    approvals: Approvals
    tokens: Tokens
    audit: AuditTrail
    bot: SlackBot | None
    policy: PolicyPublisher
    playbooks: PlaybookCatalog
    tailnet: Tailnet | None = None
    onboarding: Onboarding | None = None
    onboard_runner: OnboardRunner | None = None

    def api(self) -> web.Application:
        """The HTTP application over this system (with the Slack endpoint when Slack is on)."""
        services = ApiServices(
            self.core,
            self.approvals,
            self.tokens,
            self.audit,
            self.metrics,
            SshKeys(self.store, now),
            Playbooks(self.playbooks, self.store, now),
            self.policy,
        )
        options = ApiOptions(
            rate_per_second=self.settings.rate_limit,
            burst=self.settings.rate_burst,
            cors_origins=self.settings.cors_origins,
        )
        app = build_app(services, options)
        if self.onboarding is not None:
            app[ONBOARD_KEY] = self.onboarding
        if self.bot is not None:
            self.bot.mount(app)
        return app


def slack_bot(
    settings: Settings, core: Provisioner, approvals: Approvals, store: SqlStore
) -> SlackBot | None:
    """The Slack edge, if Slack is configured."""
    slack = settings.slack
    if slack is None:
        return None
    credentials = SlackCredentials(
        slack.bot_token, slack.signing_secret, slack.app_token, slack.api_url
    )
    config = BotConfig(slack.slash_command, slack.ops_channel, slack.ops_users)
    return SlackBot(
        credentials,
        config,
        core=core,
        approvals=approvals,
        conversations=Conversations(store, now),
        keys=SshKeys(store, now),
    )


@asynccontextmanager
async def built(settings: Settings) -> AsyncIterator[System]:
    """Build the system, and close what it opened on the way out."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    login = GuestLogin("provisioner", ensure_keypair(settings.data_dir / "keys" / "id_ed25519"))
    store = await SqlStore.open(settings.database_url)
    catalog = Catalog.of(settings.plans, settings.images)

    async def stored_nodes() -> list[Node]:
        async with store.read() as tx:
            return await tx.list_nodes()

    async def report(sighting: HostKeySighting) -> None:
        await core.nodes.report_host_key(sighting)

    fleet = Fleet((), node_access(settings, report), stored_nodes)
    tailnet = build_tailnet(settings.tailnet)
    try:
        async with store.transaction() as tx:
            await tx.sync_catalog(settings.nodes, settings.plans, settings.images)
        await fleet.refresh()
        images = Images(store, catalog, fleet, now)
        await images.reload()
        await images.stock_simulated()
        metrics = Metrics()
        policy = policy_publisher(settings, store, tailnet, now)
        playbooks = PlaybookCatalog(settings.playbooks_path, settings.data_dir, now)
        runner_binary = shutil.which(settings.ansible_playbook) or settings.ansible_playbook
        contexts = StepContexts(
            store,
            catalog,
            fleet,
            CloudInitSeeds(),
            now,
            login=login,
            timeouts=Timeouts(boot=settings.boot_timeout),
            tailnet=tailnet,
            join=tailnet_join(settings.tailnet),
            tag_policy=PolicyTags(policy) if tailnet is not None else None,
            playbooks=PlaybookTools(
                playbooks,
                AnsiblePlaybookRunner(Path(runner_binary)),
                settings.data_dir / "keys" / "id_ed25519",
                settings.playbook_timeout.total_seconds(),
            ),
        )
        runner = OperationRunner(
            store,
            contexts,
            now,
            metrics,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.workers,
            fault_point=settings.fault_point,
        )
        # An extra HTTP process has no workers of its own: it wakes its parent's.
        wake = (
            http_processes.wake_sender(http_processes.wake_path(settings.data_dir))
            if settings.serve_role == "http"
            else runner.wake
        )
        core = Provisioner(
            store,
            catalog,
            fleet,
            now,
            wake,
            quota=settings.quota,
            tag_owners=tailnet is not None,
            playbooks=playbooks,
            defaults=Defaults(settings.default_plan, settings.default_image),
        )
        approvals = Approvals(store, now, wake)
        tokens = Tokens(store, now)
        bot = slack_bot(settings, core, approvals, store)
        if bot is not None:
            runner.on_progress(bot.deps.wake_sync.set)
        reconciler = Reconciler(
            store,
            fleet,
            now,
            grace=settings.orphan_grace,
            tailnet=tailnet_reconciler(settings, store, tailnet, now),
        )
        onboarding, onboard_runner = build_onboarding(store, now, settings.data_dir, runner.worker)
        if bot is not None:
            bot.onboard.attach(onboarding)
        yield System(
            settings,
            store,
            fleet,
            metrics,
            runner,
            core,
            images,
            reconciler,
            approvals,
            tokens,
            AuditTrail(store),
            bot,
            policy,
            playbooks,
            tailnet,
            onboarding,
            onboard_runner,
        )
    finally:
        if tailnet is not None:
            await tailnet.close()
        await fleet.close()
        await store.close()


async def serve(settings: Settings) -> None:
    """Run the API, the workers and the scheduler until SIGTERM or SIGINT, then drain."""
    if settings.serve_role == "http":
        await serve_http(settings)
        return
    async with built(settings) as system:
        await ensure_admin(system)
        _freeze_garbage()
        scheduler = _scheduler(system)
        web_runner = web.AppRunner(system.api(), access_log_format=ACCESS_LOG_FORMAT)
        await web_runner.setup()
        # Reconcile before taking work (bounded: a hung node must not hold up the start).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(upkeep(system), UPKEEP_AT_START)
        shared = settings.http_processes > 1
        site = web.TCPSite(web_runner, settings.host, settings.port, reuse_port=shared)
        await site.start()
        system.runner.start()
        if system.onboard_runner is not None:
            system.onboard_runner.start()
        wakes = children = None
        if shared:
            wakes = await http_processes.listen_for_wakes(
                http_processes.wake_path(settings.data_dir), system.runner.wake
            )
            children = http_processes.start_children(
                settings.http_processes - 1, settings.config_path
            )
        if system.bot is not None:
            await system.bot.start()
        scheduler.start()
        log.info("serving on %s (worker %s)", settings.url, system.runner.worker)
        await _until_signalled()
        log.info("shutting down: draining operations for up to %g s", DRAIN_SECONDS)
        if children:
            await http_processes.stop_children(children, DRAIN_SECONDS)
        await site.stop()
        scheduler.shutdown(wait=False)
        if system.bot is not None:
            await system.bot.stop()
        await system.runner.stop(DRAIN_SECONDS)
        if system.onboard_runner is not None:
            await system.onboard_runner.stop()
        await web_runner.cleanup()
        if wakes is not None:
            wakes.close()


async def serve_http(settings: Settings) -> None:
    """An extra HTTP process: answers on the shared port; the parent's workers do the work."""
    async with built(settings) as system:
        _freeze_garbage()
        web_runner = web.AppRunner(system.api(), access_log_format=ACCESS_LOG_FORMAT)
        await web_runner.setup()
        site = web.TCPSite(web_runner, settings.host, settings.port, reuse_port=True)
        await site.start()
        # A request taken here has its password here: this process does its SSH work.
        if system.onboard_runner is not None:
            system.onboard_runner.start()
        await _until_signalled()
        await site.stop()
        if system.onboard_runner is not None:
            await system.onboard_runner.stop()
        await web_runner.cleanup()


def _freeze_garbage() -> None:
    """Move what lives as long as the process out of the collector's sight.

    A full collection over it otherwise pauses the loop for ~80 ms.
    """
    gc.collect()
    gc.freeze()


async def upkeep(system: System) -> None:
    """Learn imported images and node changes, look at the pools, reconcile with the nodes."""
    await system.images.reload()
    await system.images.stock_simulated()
    await system.fleet.refresh()
    await system.fleet.survey(timeout=10.0)
    findings = await system.reconciler.run()
    devices = findings.devices
    if devices.orphans or devices.removed:
        log.info(
            "reconcile: %d tailnet device(s) of no workspace found, %d removed",
            len(devices.orphans),
            len(devices.removed),
        )
    if findings.orphans or findings.reaped or findings.lost:
        log.info(
            "reconcile: %d orphan(s) found, %d removed, %d workspace(s) lost",
            len(findings.orphans),
            len(findings.reaped),
            len(findings.lost),
        )


def _scheduler(system: System) -> AsyncIOScheduler:
    """Periodic jobs: expire workspaces, and remind owners before expiry when Slack is on.

    APScheduler only triggers; the store decides (a delete or reminder happens once even
    when several processes run the same job).
    """
    scheduler = AsyncIOScheduler(timezone="UTC")
    jobs: list[tuple[Callable[..., Coroutine[Any, Any, Any]], int, list[Any]]] = [
        (system.core.expire_workspaces, 60, [SYSTEM_ACTOR]),
        (upkeep, UPKEEP_SECONDS, [system]),
    ]
    if system.bot is not None:
        jobs.append((system.bot.remind, 300, []))
    for job, seconds, args in jobs:
        scheduler.add_job(
            job, "interval", seconds=seconds, args=args, max_instances=1, coalesce=True
        )
    return scheduler


async def _until_signalled() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def ensure_admin(system: System) -> None:
    """Adopt the configured admin token, or print a new one at first start."""
    if system.settings.admin_token:
        await system.tokens.adopt(SYSTEM_ACTOR, system.settings.admin_token, Role.ADMIN, "admin")
        return
    secret = await system.tokens.first_admin(SYSTEM_ACTOR)
    if secret is None:
        return
    path = system.settings.data_dir / CLI_TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    # Printed once, on purpose, to the terminal only (never to the log).
    print(
        f"Admin token (shown once; also saved for the local CLI in {path}):\n  {secret}", flush=True
    )
