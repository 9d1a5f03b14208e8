"""The playbook catalogue: hostile uploads refused (member and rule named, nothing stored), good
ones stored by digest, and the operator's directory forms."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from provisioner.errors import Conflict, InvalidInput, NotFound, UnknownReference
from provisioner.playbooks import PlaybookCatalog, PlaybookSource, default_name

SITE = b"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
MIB = 1024 * 1024


def zip_of(files: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    """A zip archive; `modes` gives members a Unix file type (links, devices)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = ((modes or {}).get(name, stat.S_IFREG | 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def tar_of(
    files: dict[str, bytes], special: dict[str, bytes] | None = None, gz: bool = False
) -> bytes:
    """A tar (or tar.gz) archive; `special` adds members of a tar type (SYMTYPE, CHRTYPE...)."""
    buffer = io.BytesIO()
    options = {"mode": "w:gz", "compresslevel": 1} if gz else {"mode": "w"}
    with tarfile.open(fileobj=buffer, **options) as archive:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind in (special or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "site.yml" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            archive.addfile(info)
    return buffer.getvalue()


def tgz_of(files: dict[str, bytes]) -> bytes:
    return tar_of(files, gz=True)


def semi_random(size: int) -> bytes:
    """Bytes that compress about 30 times: over the size limit without tripping the ratio."""
    blocks = (os.urandom(1024) + bytes(30 * 1024) for _ in range(size // (31 * 1024) + 1))
    return b"".join(blocks)[:size]


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def catalog(tmp_path: Path) -> PlaybookCatalog:
    (tmp_path / "playbooks").mkdir()
    return PlaybookCatalog(tmp_path / "playbooks", tmp_path / "data")


def stored(tmp_path: Path) -> list[str]:
    """Everything the store holds, but its lock file and its empty staging directory."""
    root = tmp_path / "data" / "playbook-store"
    if not root.exists():
        return []
    found = [str(p.relative_to(root)) for p in root.rglob("*")]
    return sorted(name for name in found if name not in ("index.lock", ".incoming"))


async def upload(catalog: PlaybookCatalog, data: bytes, name: str = "web", **kw: str) -> object:
    return await catalog.upload(chunks_of(data), name=name, uploaded_by="alice@example.com", **kw)


def role(path: str, text: str) -> dict[str, bytes]:
    return {"site.yml": SITE, path: text.encode()}


HOSTILE: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("zip slip", lambda: zip_of({"site.yml": SITE, "../evil.yml": b"x"}), "upload_parent_path", "../evil.yml"),
    ("tar slip", lambda: tar_of({"site.yml": SITE, "a/../../evil": b"x"}), "upload_parent_path", "a/../../evil"),
    ("zip absolute", lambda: zip_of({"site.yml": SITE, "/etc/cron.d/x": b"x"}), "upload_absolute_path", "/etc/cron.d/x"),
    ("tar absolute", lambda: tar_of({"site.yml": SITE, "/etc/cron.d/x": b"x"}), "upload_absolute_path", "/etc/cron.d/x"),
    ("zip symlink", lambda: zip_of({"site.yml": SITE, "link": b"/etc/shadow"}, {"link": stat.S_IFLNK | 0o777}), "upload_link", "link"),
    ("tar symlink", lambda: tar_of({"site.yml": SITE}, {"link": tarfile.SYMTYPE}), "upload_link", "link"),
    ("tar hardlink", lambda: tar_of({"site.yml": SITE}, {"hard": tarfile.LNKTYPE}), "upload_link", "hard"),
    ("tar device", lambda: tar_of({"site.yml": SITE}, {"dev/sda": tarfile.BLKTYPE}), "upload_special_file", "dev/sda"),
    ("tar char device", lambda: tar_of({"site.yml": SITE}, {"null": tarfile.CHRTYPE}), "upload_special_file", "null"),
    ("tar fifo", lambda: tar_of({"site.yml": SITE}, {"pipe": tarfile.FIFOTYPE}), "upload_special_file", "pipe"),
    ("zip device", lambda: zip_of({"site.yml": SITE, "null": b""}, {"null": stat.S_IFCHR | 0o666}), "upload_special_file", "null"),
    ("zip bomb by ratio", lambda: zip_of({"site.yml": SITE, "zeros": bytes(10 * MIB)}), "upload_expansion_ratio", "zeros"),
    ("tar bomb by ratio", lambda: tgz_of({"site.yml": SITE, "zeros": bytes(10 * MIB)}), "upload_expansion_ratio", "zeros"),
    ("zip bomb by size", lambda: zip_of({"site.yml": SITE, "big": semi_random(66 * MIB)}), "upload_too_large_expanded", "big"),
    ("tar bomb by size", lambda: tgz_of({"site.yml": SITE, "big": semi_random(66 * MIB)}), "upload_too_large_expanded", "big"),
    ("zip of 1001 members", lambda: zip_of({"site.yml": SITE} | {f"f{i}": b"" for i in range(1000)}), "upload_too_many_members", "(the archive)"),
    ("tar of 1001 members", lambda: tar_of({"site.yml": SITE} | {f"f{i}": b"" for i in range(1000)}), "upload_too_many_members", "f999"),
    ("library in a role", lambda: tgz_of(role("roles/r/library/evil.py", "x")), "upload_plugin_dir", "roles/r/library/evil.py"),
    ("module_utils in a role", lambda: zip_of(role("roles/r/module_utils/u.py", "x")), "upload_plugin_dir", "roles/r/module_utils/u.py"),
    ("filter plugins", lambda: zip_of(role("filter_plugins/f.py", "x")), "upload_plugin_dir", "filter_plugins/f.py"),
    ("collection plugins", lambda: tar_of(role("collections/ansible_collections/a/b/plugins/modules/m.py", "x")), "upload_plugin_dir", "collections/ansible_collections/a/b/plugins/modules/m.py"),
    ("ansible.cfg", lambda: zip_of(role("ansible.cfg", "[defaults]\n")), "upload_ansible_cfg", "ansible.cfg"),
    ("nested ansible.cfg", lambda: tar_of(role("roles/r/ansible.cfg", "[defaults]\n")), "upload_ansible_cfg", "roles/r/ansible.cfg"),
    ("local_action", lambda: zip_of(role("roles/r/tasks/main.yml", "- local_action: command id\n")), "upload_local_action", "roles/r/tasks/main.yml"),
    ("delegate_to localhost", lambda: tgz_of(role("roles/r/tasks/main.yml", "- command: id\n  delegate_to: localhost\n")), "upload_delegate_localhost", "roles/r/tasks/main.yml"),
    ("delegate_to 127.0.0.1", lambda: zip_of(role("tasks.yml", "- command: id\n  delegate_to: '127.0.0.1'\n")), "upload_delegate_localhost", "tasks.yml"),
    ("hosts localhost", lambda: zip_of({"site.yml": b"- hosts: localhost\n  tasks: []\n"}), "upload_local_hosts", "site.yml"),
    ("connection local", lambda: zip_of({"site.yml": SITE + b"  connection: local\n"}), "upload_local_connection", "site.yml"),
    ("pipe lookup", lambda: zip_of(role("templates/t.j2", "{{ lookup('pipe', 'cat /etc/shadow') }}")), "upload_controller_lookup", "templates/t.j2"),
    ("ssh args var", lambda: zip_of(role("group_vars/all.yml", "ansible_ssh_common_args: -o ProxyCommand=x\n")), "upload_connection_vars", "group_vars/all.yml"),
    ("jinja escape", lambda: zip_of(role("templates/t.j2", "{{ ''.__class__.__mro__ }}")), "upload_template_escape", "templates/t.j2"),
    ("absolute copy src", lambda: zip_of(role("tasks.yml", "- copy: src=/data/keys/id dest=/tmp/k\n")), "upload_controller_path", "tasks.yml"),
    ("missing site.yml", lambda: zip_of({"main.yml": SITE}), "upload_missing_entry", "site.yml"),
    ("file under a file", lambda: tar_of({"site.yml": SITE, "site.yml/x": b"x"}), "upload_bad_member", "site.yml/x"),
    ("utf-16 tasks", lambda: zip_of({"site.yml": SITE, "tasks.yml": "- local_action: x\n".encode("utf-16")}), "upload_not_text", "tasks.yml"),
    ("broken gzip", lambda: b"\x1f\x8b\x08\x00" + b"garbage" * 100, "upload_bad_archive", ""),
    ("not an archive", lambda: b"#!/bin/sh\nrm -rf /\n" * 40, "upload_not_an_archive", ""),
]  # fmt: skip


@pytest.mark.parametrize(("case", "build", "code", "member"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_a_hostile_upload_is_refused_naming_member_and_rule_and_nothing_is_stored(
    catalog: PlaybookCatalog,
    tmp_path: Path,
    case: str,
    build: Callable[[], bytes],
    code: str,
    member: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await upload(catalog, build())
    assert refused.value.code == code, refused.value.message
    if member:
        assert f"member {member!r}" in refused.value.message
    assert stored(tmp_path) == []
    assert await catalog.all() == []


async def test_an_upload_over_20_mib_is_refused_while_it_streams(
    catalog: PlaybookCatalog, tmp_path: Path
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 1
            yield bytes(MIB)

    with pytest.raises(InvalidInput) as refused:
        await catalog.upload(endless(), name="big", uploaded_by="alice")
    assert refused.value.code == "payload_too_large"
    assert sent == 21, "reading stops at the first chunk over the limit"
    assert stored(tmp_path) == []


@pytest.mark.parametrize("pack", [zip_of, tar_of, tgz_of], ids=["zip", "tar", "tar.gz"])
async def test_a_good_upload_is_stored_by_digest_and_resolvable(
    catalog: PlaybookCatalog, tmp_path: Path, pack: Callable[[dict[str, bytes]], bytes]
) -> None:
    files = {
        "site.yml": SITE,
        "roles/web/tasks/main.yml": b"- ansible.builtin.debug: {msg: hi}\n  delegate_to: web2\n",
        "roles/web/templates/motd.j2": b"listen on localhost: {{ port }}\n",
        "files/key.pub": b"ssh-ed25519 AAAA key\n",
    }
    playbook = await upload(catalog, pack(files), name="web")
    assert [p.name for p in await catalog.all()] == ["web"]
    resolved = await catalog.resolve("web")
    assert resolved.digest == playbook.digest and resolved.entry == "site.yml"  # type: ignore[attr-defined]
    assert (resolved.directory / "roles/web/templates/motd.j2").read_bytes() == files[
        "roles/web/templates/motd.j2"
    ]
    again = catalog.by_digest(resolved.digest)
    assert (again.directory, again.entry) == (resolved.directory, "site.yml")
    listed = await catalog.get("web")
    assert listed.source is PlaybookSource.UPLOAD and listed.uploaded_by == "alice@example.com"
    assert listed.fields()["created_at"] and listed.fields()["source"] == "upload"


async def test_a_reupload_gets_a_new_digest_and_the_old_content_stays_until_pruned(
    catalog: PlaybookCatalog, tmp_path: Path
) -> None:
    first = await catalog.resolve(await _name(catalog, zip_of({"site.yml": SITE})))
    await upload(catalog, zip_of({"site.yml": SITE + b"    - ansible.builtin.ping:\n"}))
    second = await catalog.resolve("web")
    assert second.digest != first.digest
    assert catalog.by_digest(first.digest).directory.is_dir(), "an earlier operation still runs it"
    assert await catalog.prune(in_use=[first.digest]) == []
    assert await catalog.prune(in_use=[]) == [first.digest]
    with pytest.raises(NotFound):
        catalog.by_digest(first.digest)
    await catalog.delete("web")
    with pytest.raises(UnknownReference):
        await catalog.resolve("web")
    assert catalog.by_digest(second.digest).directory.is_dir(), "delete keeps the content"
    with pytest.raises(NotFound):
        await catalog.delete("web")


async def _name(catalog: PlaybookCatalog, data: bytes) -> str:
    await upload(catalog, data)
    return "web"


async def test_an_entry_point_other_than_site_yml(catalog: PlaybookCatalog) -> None:
    await upload(catalog, tar_of({"deploy.yml": SITE}), name="deploy", entry="deploy.yml")
    assert (await catalog.resolve("deploy")).entry == "deploy.yml"
    with pytest.raises(InvalidInput) as refused:
        await upload(catalog, tar_of({"deploy.yml": SITE}), name="x", entry="../deploy.yml")
    assert refused.value.code == "invalid_playbook_entry"


async def test_the_directory_forms_and_their_snapshots(
    catalog: PlaybookCatalog, tmp_path: Path
) -> None:
    directory = tmp_path / "playbooks"
    (directory / "base").mkdir()
    (directory / "base" / "site.yml").write_bytes(SITE)
    (directory / "base" / "files").mkdir()
    (directory / "base" / "files" / "motd").write_text("hello\n")
    (directory / "users.yml").write_bytes(SITE)
    (directory / "empty").mkdir()  # no site.yml: not a playbook
    listed = await catalog.all()
    assert [(p.name, p.source, p.entry) for p in listed] == [
        ("base", PlaybookSource.DIRECTORY, "site.yml"),
        ("users", PlaybookSource.DIRECTORY, "users.yml"),
    ]
    base = await catalog.resolve("base")
    assert (base.directory / "files" / "motd").read_text() == "hello\n"
    users = await catalog.resolve("users")
    assert users.entry == "users.yml" and not (users.directory / "base").exists()
    (directory / "base" / "files" / "motd").write_text("changed\n")
    changed = await catalog.resolve("base")
    assert changed.digest != base.digest
    assert (catalog.by_digest(base.digest).directory / "files" / "motd").read_text() == "hello\n"
    with pytest.raises(Conflict):
        await upload(catalog, zip_of({"site.yml": SITE}), name="base")
    with pytest.raises(UnknownReference):
        await catalog.resolve("nope")


def test_an_upload_is_named_after_its_file_without_extensions() -> None:
    assert default_name("C:\\Users\\me\\web-server.tar.gz") == "web-server"
    with pytest.raises(InvalidInput):
        default_name("../.zip")
