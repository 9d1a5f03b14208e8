"""The token API's keys, playbooks and tailnet-policy routes, against the real app."""

from __future__ import annotations

from typing import Any

from aiohttp import FormData
from aiohttp.test_utils import TestClient

from provisioner.app.composition import System
from tests.playbook_archives import tar_gz

Client = TestClient[object, object]
PUBLIC = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPZ0pQh6bWwJm0Wb5+7n1hFh2e0d7bJbhOq7pfnS3m5Y dev@laptop"
)
PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
SITE = b"- hosts: all\n  tasks:\n    - ansible.builtin.ping:\n"


async def upload(client: Client, headers: dict[str, str], data: bytes, **fields: str) -> Any:
    form = FormData()
    form.add_field("file", data, filename="setup.tar.gz", content_type="application/gzip")
    for key, value in fields.items():
        form.add_field(key, value)
    return await client.post("/v1/playbooks", data=form, headers=headers)


async def test_keys_are_added_listed_removed_and_a_private_key_is_refused_unechoed(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    added = await client.post("/v1/keys", json={"public_key": PUBLIC}, headers=admin_headers)
    assert added.status == 201, await added.text()
    key = await added.json()
    assert key["fingerprint"].startswith("SHA256:") and key["id"].startswith("key_")
    again = await client.post("/v1/keys", json={"public_key": PUBLIC}, headers=admin_headers)
    assert again.status == 200
    listed = await (await client.get("/v1/keys", headers=admin_headers)).json()
    assert [k["id"] for k in listed["keys"]] == [key["id"]]

    refused = await client.post("/v1/keys", json={"public_key": PRIVATE}, headers=admin_headers)
    body = await refused.text()
    assert refused.status == 422 and "private_key_refused" in body
    assert "b3BlbnNzaC1rZXkt" not in body
    audit = await (await client.get("/v1/audit", headers=admin_headers)).text()
    assert "b3BlbnNzaC1rZXkt" not in audit

    gone = await client.delete(f"/v1/keys/{key['id']}", headers=admin_headers)
    assert gone.status == 200
    missing = await client.delete(f"/v1/keys/{key['id']}", headers=admin_headers)
    assert missing.status == 404
    assert (await (await client.get("/v1/keys", headers=admin_headers)).json())["keys"] == []


async def test_a_playbook_is_uploaded_listed_and_deleted_and_a_hostile_one_refused(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    good = await upload(client, admin_headers, tar_gz({"site.yml": SITE}), name="setup")
    assert good.status == 201, await good.text()
    stored = await good.json()
    assert stored["name"] == "setup" and stored["source"] == "upload" and stored["digest"]
    listed = await (await client.get("/v1/playbooks", headers=admin_headers)).json()
    assert [p["name"] for p in listed["playbooks"]] == ["setup"]

    hostile = tar_gz({"site.yml": SITE, "ansible.cfg": b"[defaults]\n"})
    refused = await upload(client, admin_headers, hostile, name="evil")
    body = await refused.json()
    assert refused.status == 422, body
    assert "ansible.cfg" in body["error"]["message"]
    assert (await client.get("/v1/playbooks/evil", headers=admin_headers)).status == 404

    deleted = await client.delete("/v1/playbooks/setup", headers=admin_headers)
    assert deleted.status == 204
    assert (await client.get("/v1/playbooks/setup", headers=admin_headers)).status == 404
    actions = [
        e["action"]
        for e in (await (await client.get("/v1/audit", headers=admin_headers)).json())["events"]
    ]
    assert "playbook.uploaded" in actions and "playbook.deleted" in actions


async def test_playbooks_on_create_are_resolved_or_refused_with_the_field(
    client: Client, admin_headers: dict[str, str]
) -> None:
    unknown = await client.post(
        "/v1/workspaces", json={"name": "pb", "playbooks": ["nope"]}, headers=admin_headers
    )
    body = await unknown.json()
    assert unknown.status == 422, body
    assert "nope" in body["error"]["message"]

    await upload(client, admin_headers, tar_gz({"site.yml": SITE}), name="setup")
    simulated = await client.post(
        "/v1/workspaces", json={"name": "pb", "playbooks": ["setup"]}, headers=admin_headers
    )
    refused = await simulated.json()
    assert simulated.status == 422, refused
    assert "test driver" in refused["error"]["message"]
    listed = await (await client.get("/v1/workspaces", headers=admin_headers)).json()
    assert listed["workspaces"] == []  # nothing half-created


async def test_running_a_playbook_needs_a_running_workspace_and_a_known_playbook(
    client: Client, admin_headers: dict[str, str]
) -> None:
    created = await (
        await client.post("/v1/workspaces", json={"name": "runner"}, headers=admin_headers)
    ).json()
    ws_id = created["workspace"]["id"]
    unknown = await client.post(
        f"/v1/workspaces/{ws_id}/playbooks", json={"playbook": "nope"}, headers=admin_headers
    )
    assert unknown.status == 422
    await upload(client, admin_headers, tar_gz({"site.yml": SITE}), name="setup")
    local = await client.post(
        f"/v1/workspaces/{ws_id}/playbooks",
        json={"playbook": "setup", "extra_vars": {"ansible_connection": "local"}},
        headers=admin_headers,
    )
    assert local.status == 422 and "ansible_" in await local.text()


async def test_the_generated_policy_is_served_to_operators(
    client: Client, admin_headers: dict[str, str]
) -> None:
    answer = await client.get("/v1/acl", headers=admin_headers)
    body = await answer.json()
    assert answer.status == 200, body
    assert '"tagOwners"' in body["policy"] and body["diff"] is None
    assert body["dialect"] == "tailscale"
