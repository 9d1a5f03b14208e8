"""Existing-host onboarding built from settings: the use cases, their runner, a lazy onboarder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from provisioner.onboard_runner import OnboardRunner
from provisioner.onboarding import Onboarding
from provisioner.ports import Store
from provisioner.ports.onboarding import Account, HostOnboarder, KeyPair, PasswordLogin


class LazyOnboarder:
    """The asyncssh onboarder, imported at first use: asyncssh costs a serve ~30 MB."""

    def __init__(self) -> None:
        self._real: HostOnboarder | None = None

    def _onboarder(self) -> HostOnboarder:
        if self._real is None:
            from provisioner.adapters.host_onboarding import SshHostOnboarder

            self._real = SshHostOnboarder()
        return self._real

    def new_keypair(self, comment: str) -> KeyPair:
        """A fresh Ed25519 key pair."""
        return self._onboarder().new_keypair(comment)

    async def host_key(self, host: str, port: int) -> str:
        """The public host key line the host presents."""
        return await self._onboarder().host_key(host, port)

    async def create_account(self, login: PasswordLogin, account: Account) -> Sequence[str]:
        """Log in with the password, make the account, install its keys."""
        return await self._onboarder().create_account(login, account)

    async def verify_key_login(
        self,
        host: str,
        port: int,
        host_key: str,
        user: str,
        private_key: str,
        *,
        expect: str,
        drop: str | None = None,
    ) -> Sequence[str]:
        """A fresh key login as `user`."""
        return await self._onboarder().verify_key_login(
            host, port, host_key, user, private_key, expect=expect, drop=drop
        )


def build_onboarding(
    store: Store, clock: Callable[[], datetime], data_dir: Path, worker: str
) -> tuple[Onboarding, OnboardRunner]:
    """The onboarding use cases and the runner that does their SSH work in this process."""
    onboarder = LazyOnboarder()
    onboarding = Onboarding(store, onboarder, clock, data_dir, worker=worker)
    return onboarding, OnboardRunner(onboarding, onboarder)
