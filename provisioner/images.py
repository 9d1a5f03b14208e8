"""Image use cases: import a base image (and kernel boot files) into each node's pool once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from provisioner.audit import record
from provisioner.catalog import Catalog
from provisioner.errors import HypervisorError, InvalidInput, NotFound
from provisioner.fleet import Fleet
from provisioner.models import Actor, Image, NodeTrust
from provisioner.ports import AuditRows, Database, ImageRows
from provisioner.requests import NAME_RE

Progress = Callable[[str], None]


class ImageTx(ImageRows, AuditRows, Protocol):
    """What image use cases touch: image rows and the audit trail."""


@dataclass(frozen=True)
class ImageFiles:
    """The local files of an image: a qcow2 disk, and optionally a kernel and initrd."""

    disk: Path
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None


class Images:
    """Importing images into nodes, and keeping the catalog in step with the store."""

    def __init__(
        self,
        store: Database[ImageTx],
        catalog: Catalog,
        fleet: Fleet,
        clock: Callable[[], datetime],
    ) -> None:
        self._store, self._catalog, self._fleet, self._clock = store, catalog, fleet, clock

    async def reload(self) -> None:
        """Learn images that an import (perhaps in another process) registered."""
        async with self._store.read() as tx:
            self._catalog.learn_images(await tx.list_images())

    async def stock_simulated(self) -> None:
        """Give test-driver nodes every known image: their pools live only in this process."""
        for node in self._fleet.nodes():
            if node.simulated:
                hypervisor = await self._fleet.hypervisor(node.name)
                for image in self._catalog.images.values():
                    for volume in _volumes(image):
                        if await hypervisor.volume(volume) is None:
                            # Another system in this process may stock the same pool now.
                            with contextlib.suppress(HypervisorError):
                                await hypervisor.upload_volume(volume, b"")

    async def import_image(
        self,
        actor: Actor,
        name: str,
        files: ImageFiles,
        node_names: Sequence[str],
        progress: Progress,
    ) -> Image:
        """Upload the files into each chosen node's pool, skipping volumes already there."""
        image = self._image_for(name, files)
        targets = await self._targets(node_names, progress)
        uploads = [(image.base_volume, files.disk)]
        if image.kernel and files.kernel:
            uploads.append((image.kernel, files.kernel))
        if image.initrd and files.initrd:
            uploads.append((image.initrd, files.initrd))
        for node in targets:
            hypervisor = await self._fleet.hypervisor(node)
            for volume, path in uploads:
                if await hypervisor.volume(volume) is not None:
                    progress(f"{node}: {volume} already there")
                    continue
                progress(
                    f"{node}: uploading {path.name} ({path.stat().st_size >> 20} MiB) as {volume}"
                )
                await hypervisor.upload_volume(volume, path)
                progress(f"{node}: {volume} done")
        async with self._store.transaction() as tx:
            if name not in self._catalog.images or image != self._catalog.images[name]:
                await tx.save_image(image)
            reason = f"{files.disk.name} onto {', '.join(targets) or 'no node'}"
            await record(tx, self._clock(), actor, "image.imported", name, reason=reason)
        await self.reload()
        return image

    def _image_for(self, name: str, files: ImageFiles) -> Image:
        """The image as configured, given kernel boot volumes when files for them came along."""
        if not NAME_RE.fullmatch(name):
            raise InvalidInput(f"invalid image name {name!r}: use lower-case letters, digits, '-'")
        for path in (files.disk, files.kernel, files.initrd):
            if path is not None and not path.is_file():
                raise InvalidInput(f"{path} is not a readable file")
        image = self._catalog.images.get(name) or Image(name, f"{name}.qcow2")
        if files.kernel and not image.kernel:
            image = replace(image, kernel=f"{name}.vmlinuz", cmdline=files.cmdline or image.cmdline)
        if files.initrd and not image.initrd:
            image = replace(image, initrd=f"{name}.initrd")
        if files.cmdline and files.cmdline != image.cmdline:
            image = replace(image, cmdline=files.cmdline)
        return image

    async def _targets(self, node_names: Sequence[str], progress: Progress) -> list[str]:
        """The trusted nodes to import into: the named ones, or all reached over SSH or locally."""
        known = {node.name: node for node in self._fleet.nodes()}
        for name in node_names:
            if name not in known:
                raise NotFound(f"no node named {name!r}; see `provisioner node list`")
        chosen = [known[n] for n in node_names] or list(known.values())
        untrusted = [n.name for n in chosen if n.trust != NodeTrust.TRUSTED]
        if untrusted:
            raise InvalidInput(
                f"node(s) {', '.join(untrusted)} have an unapproved host key; "
                "approve with `provisioner node approve NAME --fingerprint SHA256:…` first"
            )
        for node in chosen:
            if node.simulated:
                # Test-driver pools live inside each serving process, which stocks them itself.
                progress(
                    f"{node.name}: libvirt's test driver keeps no files; serving processes "
                    "give it the image within a minute"
                )
        return [n.name for n in chosen if not n.simulated]


def _volumes(image: Image) -> list[str]:
    """The volumes an image consists of on a node."""
    return [v for v in (image.base_volume, image.kernel, image.initrd) if v]
