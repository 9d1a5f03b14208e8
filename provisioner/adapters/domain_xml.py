"""libvirt domain XML for a workspace, with our metadata so scans can tell our domains apart."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from provisioner.ports import DomainSpec

NAMESPACE = "https://provisioner.dev/xmlns/workspace/1"
PREFIX = "provisioner"
ET.register_namespace(PREFIX, NAMESPACE)


@dataclass(frozen=True)
class BootFiles:
    """Where a domain's disks, and its kernel and initrd for direct kernel boot, live."""

    disk: str
    seed: str
    kernel: str | None = None
    initrd: str | None = None


def domain_xml(spec: DomainSpec, domain_type: str, files: BootFiles) -> str:
    """The XML that defines `spec` as a domain of `domain_type` (qemu, kvm or test)."""
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
    metadata = ET.SubElement(domain, "metadata")
    metadata.append(ET.fromstring(metadata_xml(spec)))  # noqa: S314 (our own XML)
    _os(domain, spec, files)
    features = ET.SubElement(domain, "features")
    # Without ACPI the guest cannot be shut down gracefully, and sees only one CPU.
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    _disk(devices, "disk", files.disk, "qcow2", target=("vda", "virtio"))
    # IDE: the i440fx machine has it built in; a SATA controller needs a module the guest may lack.
    _disk(devices, "cdrom", files.seed, "raw", target=("hdc", "ide"))
    interface = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(interface, "source", network=spec.network)
    ET.SubElement(interface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    # Kept on the node so a guest that never comes up can be diagnosed after the fact.
    ET.SubElement(serial, "log", file=console_log(spec.name), append="off")
    ET.SubElement(devices, "console", type="pty")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    # A guest without an entropy source can stall its boot (sshd, cloud-init) for seconds.
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    return ET.tostring(domain, encoding="unicode")


def _os(domain: ET.Element, spec: DomainSpec, files: BootFiles) -> None:
    """The <os> element: BIOS boot from the disk, or direct kernel boot when the image has one."""
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine="pc").text = "hvm"
    if files.kernel:
        ET.SubElement(os_element, "kernel").text = files.kernel
        if files.initrd:
            ET.SubElement(os_element, "initrd").text = files.initrd
        if spec.image.cmdline:
            ET.SubElement(os_element, "cmdline").text = spec.image.cmdline
    ET.SubElement(os_element, "boot", dev="hd")


def _disk(devices: ET.Element, device: str, path: str, fmt: str, target: tuple[str, str]) -> None:
    """A file-backed disk or read-only CD-ROM."""
    disk = ET.SubElement(devices, "disk", type="file", device=device)
    ET.SubElement(disk, "driver", name="qemu", type=fmt)
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=target[0], bus=target[1])
    if device == "cdrom":
        ET.SubElement(disk, "readonly")


def console_log(domain_name: str) -> str:
    """Where the node keeps a domain's serial console output."""
    return f"/var/log/libvirt/qemu/{domain_name}-console.log"


def metadata_xml(spec: DomainSpec) -> str:
    """Our metadata element: which workspace and owner the domain belongs to."""
    root = ET.Element(f"{{{NAMESPACE}}}workspace")
    ET.SubElement(root, f"{{{NAMESPACE}}}id").text = spec.workspace_id
    ET.SubElement(root, f"{{{NAMESPACE}}}owner").text = spec.owner
    return ET.tostring(root, encoding="unicode")


def workspace_id_from_metadata(xml: str) -> str | None:
    """The workspace id recorded in our metadata element, if any."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 (from libvirt, which parsed it already)
    except ET.ParseError:
        return None
    # libvirt returns the element with our namespace, or without it, depending on version.
    for tag in (f"{{{NAMESPACE}}}id", "id"):
        found = root.find(tag)
        if found is not None and found.text:
            return found.text
    return None
