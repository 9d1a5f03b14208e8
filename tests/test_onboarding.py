"""Existing-host onboarding against a real sshd on loopback with real password logins."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from provisioner.adapters.host_onboarding import SshHostOnboarder
from provisioner.adapters.store.engine import SqlStore
from provisioner.app.composition import System
from provisioner.errors import Conflict, InvalidInput, PermissionDenied, RateLimited
from provisioner.models import Actor, Role
from provisioner.onboard_models import OnboardInput, OnboardRequest, OnboardState
from provisioner.onboard_runner import OnboardRunner
from provisioner.onboarding import Onboarding
from provisioner.redaction import SECRETS
from tests.onboard_sshd import SSHD, PasswordSshd, Users, keygen, running_sshd, throwaway_users

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not SSHD.exists(),
    reason="needs root (to make throwaway users) and openssh-server",
)
DEV = Actor("dev@example.com", Role.DEVELOPER, "api", owner_scope="dev@example.com")
OPS = Actor("ops@example.com", Role.OPERATOR, "api")


def now() -> datetime:
    """The tests' clock."""
    return datetime.now(UTC)


@dataclass
class Rig:
    """The core on a fresh database, with a running runner, and what it talks to."""

    store: SqlStore
    core: Onboarding
    runner: OnboardRunner
    data_dir: Path

    async def wait(self, request_id: str, *states: OnboardState) -> OnboardRequest:
        """The request once it reaches one of `states` (fails after 20 s)."""
        for _ in range(400):
            request = await self.core.get(OPS, request_id)
            if request.state in states:
                return request
            await asyncio.sleep(0.05)
        raise AssertionError(f"{request_id} stayed {request.state}: {request.reason}")

    async def awaiting(
        self, sshd: PasswordSshd, users: Users
    ) -> tuple[OnboardRequest, tuple[str, str]]:
        """A developer's request (root login) once it waits for its host key's approval."""
        login = users.login(root=True)
        request = await self.core.request(DEV, ask(sshd, login, users.name()))
        return await self.wait(request.id, OnboardState.AWAITING_APPROVAL), login

    async def audit(self, request_id: str) -> list[tuple[str, str | None]]:
        """The request's audit events: (action, reason)."""
        async with self.store.read() as tx:
            events = await tx.list_audit(target=request_id, actor=None, after=None, limit=100)
        return [(event.action, event.reason) for event in events]

    async def dump(self) -> str:
        """Every row of every table, as text."""
        return await dump(self.store)


async def dump(store: SqlStore) -> str:
    """Every row of every table, as text."""
    async with store.read() as tx:
        tables = await tx.conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        rows = [await tx.conn.execute(sa.text(f'SELECT * FROM "{t}"')) for t in tables]
    return "\n".join(repr(row) for result in rows for row in result)


def build(store: SqlStore, data_dir: Path, worker: str, **options: object) -> Rig:
    """An Onboarding core and its runner with short timeouts."""
    timeout = float(options.pop("connect_timeout", 2.0))  # type: ignore[arg-type]
    onboarder = SshHostOnboarder(connect_timeout=timeout, command_timeout=20.0)
    core = Onboarding(
        store, onboarder, now, data_dir, worker=worker, lease_seconds=options.pop("lease", 30.0)
    )  # type: ignore[arg-type]
    runner = OnboardRunner(core, onboarder, poll_seconds=0.05, **options)  # type: ignore[arg-type]
    return Rig(store, core, runner, data_dir)


@pytest.fixture
async def rig(database_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    store = await SqlStore.open(database_url)
    built = build(store, tmp_path / "data", "w-test")
    built.runner.start()
    try:
        yield built
    finally:
        await built.runner.stop()
        await store.close()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[PasswordSshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def users() -> Iterator[Users]:
    with throwaway_users() as made:
        yield made


def ask(sshd: PasswordSshd, login: tuple[str, str], desired: str, **extra: object) -> OnboardInput:
    """A request to onboard `desired` on the test sshd."""
    key = extra.pop("public_key", None)
    return OnboardInput(
        host="127.0.0.1",
        port=sshd.port,
        login_user=login[0],
        login_password=login[1],
        desired_user=desired,
        generate_key=key is None,
        public_key=key,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def ssh_as(sshd: PasswordSshd, user: str, key: Path, tmp_path: Path) -> str:
    """`id -un` over a real OpenSSH client login with `key`, the host key checked."""
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known}", "-p", str(sshd.port), f"{user}@127.0.0.1", "id -un"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def authorized_keys(user: str) -> Path:
    """The user's authorized_keys, after checking its and its directory's owner and modes."""
    account = pwd.getpwnam(user)
    directory = Path(account.pw_dir) / ".ssh"
    keys = directory / "authorized_keys"
    for path, mode in ((directory, 0o700), (keys, 0o600)):
        info = path.lstat()
        assert stat.S_IMODE(info.st_mode) == mode and not stat.S_ISLNK(info.st_mode), path
        assert (info.st_uid, info.st_gid) == (account.pw_uid, account.pw_gid), path
    return keys


async def test_generated_key_unknown_host_key_approved_then_pinned_for_the_next(
    rig: Rig, sshd: PasswordSshd, users: Users, tmp_path: Path
) -> None:
    login, desired = users.login(root=True), users.name()
    request = await rig.core.request(DEV, ask(sshd, login, desired))
    assert request.state == OnboardState.CREATED and request.generated_key
    waiting = await rig.wait(request.id, OnboardState.AWAITING_APPROVAL, OnboardState.FAILED)
    assert waiting.presented_fingerprint == sshd.fingerprint, waiting.reason
    with pytest.raises(KeyError):
        pwd.getpwnam(desired)  # nothing happens on the host before the approval
    approved = await rig.core.approve(OPS, request.id, sshd.fingerprint)
    assert approved.state == OnboardState.RUNNING and approved.decided_by == OPS.name
    done = await rig.wait(request.id, OnboardState.SUCCEEDED, OnboardState.FAILED)
    assert done.state == OnboardState.SUCCEEDED, done.reason
    key_path = Path(done.private_key_path or "")
    assert key_path == rig.data_dir / "onboard" / request.id / "id_ed25519"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert authorized_keys(desired).read_text() == done.public_key + "\n"
    assert ssh_as(sshd, desired, key_path, tmp_path) == desired
    actions = [action for action, _ in await rig.audit(request.id)]
    assert actions == [
        "onboard.created",
        "onboard.awaiting_approval",
        "onboard.approved",
        "onboard.succeeded",
    ]
    # The same host again, with a key the developer brings: pinned now, so no approval.
    own = keygen(tmp_path / "own")
    second_user = users.name()
    given = (tmp_path / "own.pub").read_text().strip()
    second = await rig.core.request(OPS, ask(sshd, login, second_user, public_key=given))
    finished = await rig.wait(second.id, OnboardState.SUCCEEDED, OnboardState.FAILED)
    assert finished.state == OnboardState.SUCCEEDED, finished.reason
    assert finished.private_key_path is None and not finished.generated_key
    # Only the given key stays: the helper key that proved the key login is gone.
    assert authorized_keys(second_user).read_text() == given + "\n"
    assert ssh_as(sshd, second_user, own, tmp_path) == second_user
    assert [a for a, _ in await rig.audit(second.id)] == [
        "onboard.created",
        "onboard.running",
        "onboard.succeeded",
    ]
    assert rig.core.vault.ids() == set()


async def test_wrong_password_fails_clearly_and_the_password_is_nowhere(
    rig: Rig, sshd: PasswordSshd, users: Users, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    login, desired = users.login(root=True), users.name()
    wrong = "wrong-" + login[1]
    request = await rig.core.request(DEV, ask(sshd, (login[0], wrong), desired))
    assert wrong not in repr(request) and wrong not in repr(ask(sshd, (login[0], wrong), desired))
    await rig.wait(request.id, OnboardState.AWAITING_APPROVAL)
    await rig.core.approve(OPS, request.id, sshd.fingerprint)
    failed = await rig.wait(request.id, OnboardState.FAILED, OnboardState.SUCCEEDED)
    assert failed.state == OnboardState.FAILED
    assert "refused the login: wrong password" in (failed.reason or "")
    with pytest.raises(KeyError):
        pwd.getpwnam(desired)
    log_lines = [line.line for line in await rig.core.log(OPS, request.id)]
    assert any("wrong password" in line for line in log_lines)
    reasons = [reason or "" for _, reason in await rig.audit(request.id)]
    everything = "\n".join([*reasons, *log_lines, caplog.text, await rig.dump()])
    for secret in (wrong, login[1]):
        assert secret not in everything
    assert rig.core.vault.ids() == set() and wrong not in SECRETS._secrets


async def test_host_key_changed_between_approval_and_login(
    rig: Rig, sshd: PasswordSshd, users: Users
) -> None:
    login, desired = users.login(root=True), users.name()
    request = await rig.core.request(DEV, ask(sshd, login, desired))
    await rig.wait(request.id, OnboardState.AWAITING_APPROVAL)
    approved_fp = sshd.fingerprint
    sshd.new_host_key()
    await rig.core.approve(OPS, request.id, approved_fp)
    failed = await rig.wait(request.id, OnboardState.FAILED, OnboardState.SUCCEEDED)
    assert (failed.reason or "").startswith("host key changed since approval")
    assert sshd.fingerprint in (failed.reason or "")
    with pytest.raises(KeyError):
        pwd.getpwnam(desired)
    assert "Accepted password" not in sshd.log()
    # The next request sees the new key as different from the one ops pinned.
    again = await rig.core.request(DEV, ask(sshd, login, users.name()))
    waiting = await rig.wait(again.id, OnboardState.AWAITING_APPROVAL)
    assert waiting.pinned_fingerprint == approved_fp
    assert waiting.presented_fingerprint == sshd.fingerprint


async def test_a_host_that_never_answers_fails_after_the_timeout(
    database_url: str, tmp_path: Path
) -> None:
    store = await SqlStore.open(database_url)
    rig = build(store, tmp_path / "data", "w-silent", connect_timeout=0.5)
    rig.runner.start()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        spec = OnboardInput(
            host="127.0.0.1",
            port=silent.getsockname()[1],
            login_user="root",
            login_password="never-used-1",
            desired_user="onbtsilent",
            generate_key=True,
        )
        request = await rig.core.request(DEV, spec)
        failed = await rig.wait(request.id, OnboardState.FAILED, OnboardState.AWAITING_APPROVAL)
    await rig.runner.stop()
    await store.close()
    assert failed.reason == f"127.0.0.1:{spec.port} did not answer SSH within 0.5 s"
    assert rig.core.vault.ids() == set()


async def test_approve_needs_the_presented_fingerprint_and_another_person(
    rig: Rig, sshd: PasswordSshd, users: Users
) -> None:
    request, _login = await rig.awaiting(sshd, users)
    stale = "SHA256:" + "A" * 43
    with pytest.raises(Conflict) as refused:
        await rig.core.approve(OPS, request.id, stale)
    assert refused.value.code == "fingerprint_mismatch"
    assert sshd.fingerprint in refused.value.message
    with pytest.raises(InvalidInput):
        await rig.core.approve(OPS, request.id, "not a fingerprint")
    with pytest.raises(PermissionDenied):
        await rig.core.approve(DEV, request.id, sshd.fingerprint)
    unchanged = await rig.core.get(OPS, request.id)
    assert unchanged.state == OnboardState.AWAITING_APPROVAL and unchanged.decided_by is None
    assert "onboard.approved" not in [a for a, _ in await rig.audit(request.id)]
    denied = await rig.core.deny(OPS, request.id, sshd.fingerprint, "not our server")
    assert denied.state == OnboardState.FAILED
    assert denied.reason == f"host key {sshd.fingerprint} refused by {OPS.name}: not our server"
    with pytest.raises(Conflict):
        await rig.core.approve(OPS, request.id, sshd.fingerprint)  # a second click: nothing


async def test_cancel_before_login_and_the_password_is_dropped(
    rig: Rig, sshd: PasswordSshd, users: Users
) -> None:
    request, login = await rig.awaiting(sshd, users)
    assert rig.core.vault.ids() == {request.id}
    cancelled = await rig.core.cancel(OPS, request.id)
    assert cancelled.state == OnboardState.CANCELLED and cancelled.decided_by == OPS.name
    with pytest.raises(Conflict):
        await rig.core.cancel(OPS, request.id)
    with pytest.raises(Conflict):
        await rig.core.approve(OPS, request.id, sshd.fingerprint)
    for _ in range(100):
        if not rig.core.vault.ids():
            break
        await asyncio.sleep(0.02)
    assert rig.core.vault.ids() == set() and login[1] not in SECRETS._secrets
    assert "Accepted password" not in sshd.log()


async def test_rate_limits_per_requester_and_per_host(database_url: str, tmp_path: Path) -> None:
    store = await SqlStore.open(database_url)
    rig = build(store, tmp_path / "data", "w-rate")  # no runner: nothing leaves the machine
    try:
        for n in range(5):
            spec = OnboardInput(f"10.9.9.{n}", "root", "secret-pw", "onbtrate", generate_key=True)
            await rig.core.request(DEV, spec)
        with pytest.raises(RateLimited) as limited:
            await rig.core.request(DEV, replace_host(spec, "10.9.9.99"))
        assert "requester dev@example.com" in limited.value.message
        assert 590 <= limited.value.retry_after <= 600
        others = [Actor(f"u{n}@example.com", Role.DEVELOPER, "api") for n in range(6)]
        for actor in others[:4]:
            await rig.core.request(actor, spec)  # 10.9.9.4 has one request already
        with pytest.raises(RateLimited) as by_host:
            await rig.core.request(others[5], spec)
        assert "host 10.9.9.4" in by_host.value.message
        later = build(store, tmp_path / "data", "w-rate", lease=30.0)
        later.core._clock = lambda: now() + timedelta(minutes=11)  # the window has passed
        await later.core.request(DEV, replace_host(spec, "10.9.9.99"))
    finally:
        await store.close()


def replace_host(spec: OnboardInput, host: str) -> OnboardInput:
    """The same request to another host."""
    return OnboardInput(host, spec.login_user, spec.login_password, spec.desired_user, 22, True)


async def test_a_crashed_holder_leaves_its_requests_failed_as_interrupted(
    database_url: str, tmp_path: Path
) -> None:
    store = await SqlStore.open(database_url)
    try:
        # The holder takes a request and dies before its runner does anything (kill -9).
        crashed = build(store, tmp_path / "data", "w-crashed", lease=0.3)
        spec = OnboardInput("127.0.0.1", "root", "gone-with-it", "onbtcrash", generate_key=True)
        request = await crashed.core.request(DEV, spec)
        survivor = build(store, tmp_path / "data", "w-survivor")
        await asyncio.sleep(0.4)
        await survivor.runner.tick()
        failed = await survivor.core.get(OPS, request.id)
        assert failed.state == OnboardState.FAILED
        assert (failed.reason or "").startswith("interrupted: the provisioner process")
        assert "cannot resume" in (failed.reason or "")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"desired_user": "root"}, "desired_user"),
        ({"desired_user": "www-data"}, "desired_user"),
        ({"desired_user": "Bad Name"}, "desired_user"),
        ({"host": "no spaces allowed"}, "host"),
        ({"port": 0}, "port"),
        ({"login_password": ""}, "login_password"),
        ({"login_password": "two\nlines"}, "login_password"),
        ({"public_key": "ssh-ed25519 AAAA", "generate_key": True}, "public_key"),
        ({"generate_key": False}, "public_key"),
        ({"public_key": "ssh-ed25519 AAAAnotbase64!", "generate_key": False}, "public_key"),
    ],
)
async def test_invalid_requests_are_refused_naming_the_field(
    database_url: str, tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    store = await SqlStore.open(database_url)
    try:
        rig = build(store, tmp_path / "data", "w-invalid")
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "login_user": "root",
            "login_password": "pw-1234",
            "desired_user": "onbtok",
            "generate_key": True,
            **changes,
        }
        with pytest.raises(InvalidInput) as refused:
            await rig.core.request(DEV, OnboardInput(**values))  # type: ignore[arg-type]
        assert refused.value.field == field
        assert (await rig.core.list(OPS)).items == ()
    finally:
        await store.close()


async def test_a_pasted_private_key_is_refused_and_never_stored(
    database_url: str, tmp_path: Path
) -> None:
    store = await SqlStore.open(database_url)
    try:
        rig = build(store, tmp_path / "data", "w-private")
        private = keygen(tmp_path / "leaked").read_text()
        spec = OnboardInput("127.0.0.1", "root", "pw-1234", "onbtkey", public_key=private)
        with pytest.raises(InvalidInput) as refused:
            await rig.core.request(DEV, spec)
        assert refused.value.code == "private_key_refused"
        assert "PRIVATE" not in await rig.dump() and private not in refused.value.message
    finally:
        await store.close()


async def token(
    client: TestClient[Any, Any], admin: dict[str, str], role: str, owner: str
) -> dict[str, str]:
    """Authorization headers of a new token."""
    made = await client.post("/v1/tokens", json={"role": role, "owner": owner}, headers=admin)
    assert made.status == 201, await made.text()
    return {"Authorization": f"Bearer {(await made.json())['secret']}"}


async def test_the_api_end_to_end_and_the_password_in_no_answer(
    system: System,
    client: TestClient[Any, Any],
    admin_headers: dict[str, str],
    sshd: PasswordSshd,
    users: Users,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert system.onboard_runner is not None
    system.onboard_runner.start()
    try:
        dev = await token(client, admin_headers, "developer", "dev@example.com")
        ops = await token(client, admin_headers, "operator", "ops@example.com")
        login, desired = users.login(root=True), users.name()
        body = {"host": "127.0.0.1", "port": sshd.port, "login_user": login[0]}
        body |= {"login_password": login[1], "desired_user": desired, "generate_key": True}
        taken = await client.post("/v1/onboard/requests", json=body, headers=dev)
        answers = [await taken.text()]
        assert taken.status == 202, answers[0]
        request_id = (await taken.json())["id"]
        assert (await taken.json())["state"] == "created"
        path = f"/v1/onboard/requests/{request_id}"
        for _ in range(200):
            shown = await client.get(path, headers=dev)
            answers.append(await shown.text())
            if (await shown.json())["state"] != "created":
                break
            await asyncio.sleep(0.05)
        assert (await shown.json())["host_key_fingerprint"] == sshd.fingerprint
        refused = await client.post(
            f"{path}/approve", json={"fingerprint": sshd.fingerprint}, headers=dev
        )
        assert refused.status == 403  # developers may not decide
        stale = await client.post(
            f"{path}/approve", json={"fingerprint": "SHA256:" + "B" * 43}, headers=ops
        )
        assert stale.status == 409
        assert (await stale.json())["error"]["code"] == "fingerprint_mismatch"
        approved = await client.post(
            f"{path}/approve", json={"fingerprint": sshd.fingerprint}, headers=ops
        )
        assert approved.status == 200 and (await approved.json())["state"] == "running"
        for _ in range(200):
            shown = await client.get(path, headers=dev)
            answers.append(await shown.text())
            if (await shown.json())["state"] not in ("running", "awaiting_approval"):
                break
            await asyncio.sleep(0.05)
        assert (await shown.json())["state"] == "succeeded", answers[-1]
        log_text = await (await client.get(f"{path}/log", headers=dev)).text()
        assert "approved: host key" in log_text and "succeeded:" in log_text
        listed = await client.get("/v1/onboard/requests", headers=ops)
        answers += [log_text, await listed.text()]
        assert [r["id"] for r in (await listed.json())["requests"]] == [request_id]
        others = await client.get(
            "/v1/onboard/requests",
            headers=await token(client, admin_headers, "developer", "x@example.com"),
        )
        assert (await others.json())["requests"] == []
        audit = await client.get(f"/v1/audit?target={request_id}", headers=admin_headers)
        answers.append(await audit.text())
        assert login[1] not in "\n".join(answers) + caplog.text + await dump(system.store)
    finally:
        await system.onboard_runner.stop()


async def test_the_api_answers_429_with_retry_after(
    system: System, client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    dev = await token(client, admin_headers, "developer", "many@example.com")
    body = {"login_user": "root", "login_password": "pw-many-1", "desired_user": "onbtmany"}
    body |= {"generate_key": True}
    for n in range(5):
        made = await client.post(
            "/v1/onboard/requests", json=body | {"host": f"192.0.2.{n}"}, headers=dev
        )
        assert made.status == 202
    limited = await client.post(
        "/v1/onboard/requests", json=body | {"host": "192.0.2.9"}, headers=dev
    )
    assert limited.status == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 600
    assert (await limited.json())["error"]["code"] == "rate_limited"
    private = await client.post(
        "/v1/onboard/requests",
        json={
            **body,
            "host": "192.0.2.9",
            "generate_key": None,
            "public_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
        },
        headers=await token(client, admin_headers, "developer", "other@example.com"),
    )
    assert private.status in (400, 422)
    assert "abc" not in await private.text()
    assert (await private.json())["error"]["code"] == "private_key_refused"
