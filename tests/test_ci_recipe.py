"""The README's CI recipe (scripts/ci-workspace.sh) against a real `serve`, as CI would run it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serve_process import ServeGroup, ServeProcess

ROOT = Path(__file__).resolve().parent.parent
SECRET = "prov_recipe-admin-" + "r" * 24


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    """One serve on embedded defaults (SQLite: the recipe does not care about the engine)."""
    group = ServeGroup(tmp_path, SECRET)
    try:
        yield await group.start(
            {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_ADMIN_TOKEN": SECRET}
        )
    finally:
        await group.aclose()


async def recipe(serve: ServeProcess, *args: str) -> tuple[int, str]:
    """Run the recipe; its exit code and combined output."""
    env = {**os.environ, "PROVISIONER_URL": serve.url, "PROVISIONER_TOKEN": SECRET}
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts/ci-workspace.sh"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_recipe_creates_runs_and_deletes(serve: ServeProcess, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    code, out = await recipe(
        serve,
        "--name",
        "ci-recipe",
        "--",
        "sh",
        "-c",
        f'echo "$WORKSPACE_NAME $WORKSPACE_NODE" > {seen}',
    )
    assert code == 0, out
    assert seen.read_text().strip() == "ci-recipe local"
    listing = (await serve.client.get("/v1/workspaces?name=ci-recipe")).json()["workspaces"]
    assert [w["state"] for w in listing] == ["deleted"]


async def test_recipe_deletes_even_when_the_command_fails(serve: ServeProcess) -> None:
    code, out = await recipe(serve, "--name", "ci-fails", "--", "false")
    assert code == 1 and "deleting ci-fails" in out
    listing = (await serve.client.get("/v1/workspaces?name=ci-fails")).json()["workspaces"]
    assert [w["state"] for w in listing] == ["deleted"]


async def test_recipe_reports_the_server_message(serve: ServeProcess) -> None:
    code, out = await recipe(serve, "--plan", "huge", "--", "true")
    assert code == 1
    assert "HTTP 422: unknown plan 'huge'" in out
