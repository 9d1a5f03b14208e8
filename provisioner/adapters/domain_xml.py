"""libvirt domain XML for a workspace, with our metadata so scans can tell our domains apart."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from provisioner.ports import DomainSpec

NAMESPACE = "https://provisioner.dev/xmlns/workspace/1"
PREFIX = "provisioner"
ET.register_namespace(PREFIX, NAMESPACE)


def domain_xml(spec: DomainSpec, domain_type: str) -> str:
    """The XML that defines `spec` as a domain of `domain_type` (qemu, kvm or test)."""
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
    metadata = ET.SubElement(domain, "metadata")
    metadata.append(ET.fromstring(metadata_xml(spec)))  # noqa: S314 (our own XML)
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_element, "boot", dev="hd")
    features = ET.SubElement(domain, "features")
    # Without ACPI the guest cannot be shut down gracefully.
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "console", type="pty")
    return ET.tostring(domain, encoding="unicode")


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
