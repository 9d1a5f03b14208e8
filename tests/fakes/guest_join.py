"""Playing the guest's side of a tailnet join: read the auth key from a seed as cloud-init would."""

from __future__ import annotations

import io
import json

import pycdlib

from provisioner.adapters.cloudinit import TAILSCALE_KEY_PATH


def seed_user_data(iso: bytes) -> dict[str, object]:
    """The cloud-config a NoCloud seed image carries (its `user-data`, a JSON document)."""
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(iso))
    out = io.BytesIO()
    image.get_file_from_iso_fp(out, rr_path="/user-data")
    image.close()
    config: dict[str, object] = json.loads(out.getvalue().decode().removeprefix("#cloud-config\n"))
    return config


def seed_auth_key(iso: bytes) -> str | None:
    """The auth key written to the guest's key file by the seed (0600), or None if there is none."""
    files = seed_user_data(iso).get("write_files") or []
    assert isinstance(files, list)
    found = [f for f in files if f["path"] == TAILSCALE_KEY_PATH]
    assert all(f["permissions"] == "0600" for f in found)
    return str(found[0]["content"]) if found else None
