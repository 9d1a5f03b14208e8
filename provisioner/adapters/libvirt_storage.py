"""Storage pool work on a node's libvirt: overlays, streamed uploads, deletes (node thread only)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, BinaryIO

import libvirt

from provisioner.errors import Conflict, HypervisorError, InvalidInput, NotFound
from provisioner.ports import PoolSpace, VolumeInfo

CHUNK = 1 << 20
PARTIAL = ".partial"


def pool_of(conn: Any, name: str) -> Any:
    """The active storage pool `name`, or HypervisorError saying how to fix it."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        raise HypervisorError(
            f"storage pool {name!r} does not exist on the node; create it "
            f"(virsh pool-define-as {name} dir --target /var/lib/libvirt/images) "
            "or set the node's `pool`"
        ) from None
    if not pool.isActive():
        raise HypervisorError(f"storage pool {name!r} is not active; virsh pool-start {name}")
    return pool


def find_volume(pool: Any, name: str) -> Any | None:
    """The volume `name` in `pool`, or None."""
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


def volume_info(pool: Any, name: str) -> VolumeInfo | None:
    """Name, path and size of the volume `name`, or None."""
    volume = find_volume(pool, name)
    if volume is None:
        return None
    return VolumeInfo(name, volume.path(), int(volume.info()[1]))


def volume_names(pool: Any) -> list[str]:
    """Every volume in the pool, after looking at the disk again."""
    pool.refresh(0)
    return [str(name) for name in pool.listVolumes()]


def space(pool: Any) -> PoolSpace:
    """The pool's capacity and free room."""
    _state, capacity, _allocation, available = pool.info()
    return PoolSpace(int(capacity), int(available))


def create_overlay(pool: Any, name: str, base: str, size_gib: int) -> None:
    """A qcow2 overlay over `base`: only metadata is written, whatever the base's size."""
    backing = find_volume(pool, base)
    if backing is None:
        raise Conflict(
            f"base image volume {base!r} is not in the node's pool; "
            "import it with `provisioner image import`",
            code="image_missing",
        )
    backing_capacity = int(backing.info()[1])
    capacity = max(size_gib << 30, backing_capacity)
    pool.createXML(_volume_xml(name, capacity, "qcow2", backing.path()), 0)


def upload(conn: Any, pool: Any, name: str, source: bytes | Path, *, simulated: bool) -> None:
    """Stream `source` into a new volume `name` that appears only when it is complete."""
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if simulated:
        # The test driver keeps no volume contents: the volume stands for the upload.
        pool.createXML(_volume_xml(name, max(size, 1), "raw"), 0)
        return
    partial = find_volume(pool, name + PARTIAL)
    if partial is not None:
        partial.delete(0)
    partial = pool.createXML(_volume_xml(name + PARTIAL, max(size, 1), "raw"), 0)
    try:
        with _open(source) as handle:
            _stream(conn, partial, handle, size)
        pool.refresh(0)
        partial = pool.storageVolLookupByName(name + PARTIAL)
        fmt = _format_of(partial)
        # A clone made from the finished upload: a crash mid-upload leaves only `.partial`.
        pool.createXMLFrom(_volume_xml(name, int(partial.info()[1]), fmt), partial, 0)
    finally:
        partial.delete(0)


def download(conn: Any, pool: Any, name: str, limit: int) -> bytes:
    """The contents of the volume `name`, refused when larger than `limit` bytes."""
    volume = find_volume(pool, name)
    if volume is None:
        raise NotFound(f"no volume {name} in pool {pool.name()}")
    size = int(volume.info()[1])
    if size > limit:
        raise InvalidInput(f"volume {name} holds {size} bytes, more than {limit}")
    chunks: list[bytes] = []
    stream = conn.newStream(0)
    volume.download(stream, 0, size, 0)
    try:
        stream.recvAll(lambda _stream, data, sink: sink.append(data), chunks)
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    return b"".join(chunks)


def delete(pool: Any, name: str) -> bool:
    """Delete the volume if it exists; whether it did."""
    volume = find_volume(pool, name)
    if volume is None:
        return False
    volume.delete(0)
    return True


def _stream(conn: Any, volume: Any, handle: BinaryIO, size: int) -> None:
    """Send `size` bytes from `handle` into `volume` over a libvirt stream."""
    stream = conn.newStream(0)
    volume.upload(stream, 0, size, 0)
    try:
        stream.sendAll(lambda _stream, nbytes, fh: fh.read(min(nbytes, CHUNK)), handle)
        stream.finish()
    except BaseException:
        stream.abort()
        raise


def _open(source: bytes | Path) -> BinaryIO:
    """A binary reader over `source`."""
    return io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")


def _format_of(volume: Any) -> str:
    """The format libvirt detected for a volume (qcow2 or raw)."""
    target = ET.fromstring(volume.XMLDesc(0)).find("target/format")  # noqa: S314 (libvirt's XML)
    return target.get("type", "raw") if target is not None else "raw"


def _volume_xml(name: str, capacity: int, fmt: str, backing: str | None = None) -> str:
    """Volume XML: a file of `capacity` bytes in `fmt`, optionally over a backing file."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    # Nothing is preallocated: an overlay starts as a few KiB of metadata, whatever its size.
    ET.SubElement(volume, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    if backing is not None:
        store = ET.SubElement(volume, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="qcow2")
    return ET.tostring(volume, encoding="unicode")
