"""Imports point one way: bot, api → acl → provisioner → provisioner.ports (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOREIGN = {
    "aiohttp",
    "slack_bolt",
    "slack_sdk",
    "libvirt",
    "asyncssh",
    "httpx",
    "sqlalchemy",
    "alembic",
}
# The composition root's package: the only room that may import the edges.
APP = ROOT / "provisioner" / "app"


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module `path` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    """Every Python file of a package."""
    return sorted((ROOT / package).rglob("*.py"))


def roots(names: set[str]) -> set[str]:
    """The top-level package of each imported name."""
    return {name.split(".")[0] for name in names}


def core_modules() -> list[Path]:
    """The core's files: the provisioner package without its composition root and `-m` entry."""
    entry = ROOT / "provisioner" / "__main__.py"
    return [p for p in modules("provisioner") if APP not in p.parents and p != entry]


def imports_app(path: Path) -> bool:
    """Whether `path` imports the composition root's package."""
    return any(
        name == "provisioner.app" or name.startswith("provisioner.app.")
        for name in imports_of(path)
    )


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_edge_and_no_foreign_library(path: Path) -> None:
    found = roots(imports_of(path))
    assert not found & {"api", "bot", "acl"}, "the core never imports an edge"
    assert not imports_app(path), "nothing imports the composition root"
    if "adapters" not in path.parts:
        assert not found & FOREIGN, f"only adapters may import {sorted(found & FOREIGN)}"


@pytest.mark.parametrize("path", modules("provisioner/adapters"), ids=lambda p: p.name)
def test_adapters_import_only_their_own_library(path: Path) -> None:
    found = roots(imports_of(path))
    own = {
        "libvirt.py": {"libvirt"},
        "libvirt_storage.py": {"libvirt"},
        "ssh.py": {"asyncssh"},
        "ssh_pinning.py": {"asyncssh"},
        "host_onboarding.py": {"asyncssh"},
        "keyfiles.py": {"asyncssh"},
        # Guest host keys are generated with asyncssh's key code; the ISO is pycdlib's.
        "cloudinit.py": {"asyncssh", "pycdlib"},
        "store": {"sqlalchemy", "alembic"},
        "tailnet_http.py": {"httpx"},
        "tailscale.py": {"httpx"},
        "headscale.py": {"httpx"},
    }
    allowed = next(
        (libs for key, libs in own.items() if key in path.parts or key == path.name), set()
    )
    assert not (found & FOREIGN) - allowed


def test_models_use_only_the_standard_library() -> None:
    found = roots(imports_of(ROOT / "provisioner" / "models.py"))
    assert found <= set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("package", ["acl", "api", "bot"])
def test_edges_never_import_the_composition_root(package: str) -> None:
    for path in modules(package):
        assert not imports_app(path), path


def test_acl_does_not_import_the_edges() -> None:
    for path in modules("acl"):
        assert not roots(imports_of(path)) & {"api", "bot"}, path


def test_host_keys_are_never_skipped() -> None:
    for package in ("provisioner", "api", "acl", "bot"):
        for path in modules(package):
            assert "known_hosts=None" not in path.read_text(), path
