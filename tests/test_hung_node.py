"""A node that stops answering costs one timeout, not every worker: later calls fail at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from provisioner.adapters.libvirt import LibvirtHypervisor
from provisioner.errors import NodeUnavailable
from provisioner.models import Node


async def test_a_hung_node_fails_fast_after_one_timeout(silent_socket: Path) -> None:
    node = LibvirtHypervisor(
        Node("hung", f"qemu+unix:///system?socket={silent_socket}"), call_timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match=r"did not answer within 0\.5 s"):
        await node.check()
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="not answering"):
        await node.lookup("anything")
    assert time.monotonic() - started < 0.1
    # The event loop stayed free the whole time.
    assert await asyncio.wait_for(asyncio.sleep(0, result=True), 0.1)
    await node.close()


async def test_readiness_answers_while_a_node_hangs(system: object, silent_socket: Path) -> None:
    from provisioner.app.composition import System
    from provisioner.models import Node

    assert isinstance(system, System)
    system.fleet.add(Node("hung", f"qemu+unix:///system?socket={silent_socket}"))
    started = time.monotonic()
    health = await system.core.nodes.readiness(node_timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert health["local"] is None and "no answer" in (health["hung"] or "")
