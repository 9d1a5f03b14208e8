#!/bin/bash
# From-scratch host setup on Debian 12 (root, no systemd as PID 1): packages, libvirtd+virtlogd by hand,
# an isolated libvirt network with DHCP (no NAT, no ip_forward) and a dir storage pool.
# Usage: setup-host.sh [packages|daemons|all]   (daemons: inside scripts/e2e/netns-run.sh)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
NET=${NET:-e2e-net}
POOL=${POOL:-default}
POOL_DIR=${POOL_DIR:-/var/lib/libvirt/images}   # inside netns-run.sh: on its tmpfs over /var/lib/libvirt
PHASE=${1:-all}   # packages (needs registry access) | daemons | all
ts() { echo "[setup $(date +%T)] $*"; }
if [ "$PHASE" != daemons ]; then
PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc python3-dev python3-venv
  qemu-system-x86 qemu-utils openssh-server openssh-client mmdebstrap dnsmasq-base iptables
  cloud-image-utils genisoimage ansible-core busybox-static cpio bc)
if [ "$(dpkg-query -W -f='${db:Status-Status}\n' "${PKGS[@]}" 2>/dev/null | grep -cx installed)" != "${#PKGS[@]}" ]; then
  ts "apt"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/dev/null
fi
ts "apt packages ok"
fi
[ "$PHASE" = packages ] && exit 0
ts "libvirt daemons"
# /var/log/libvirt/qemu: libvirt-daemon-system ships it; libvirtd makes it only at the first domain
# start, after virtlogd has failed to open a <serial><log file=…> in it.
mkdir -p /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt /run/sshd
# libvirt-daemon without libvirt-daemon-system: create what its postinst would (else libvirtd log:
# "Failed to parse group 'libvirt-qemu'" -> "Driver state initialization failed")
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
grep -qs '^security_driver' /etc/libvirt/qemu.conf || printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' >> /etc/libvirt/qemu.conf
# in a chroot/container: qemu's private /dev (per-domain mount namespace) fails ("Failed to create PTY",
# "Failed disable mount propagation out of the root filesystem"): LIBVIRT_NO_NAMESPACES=1 turns it off.
# Not needed inside netns-run.sh on the CI VM (QEMU domains start with libvirt's default namespaces).
[ "${LIBVIRT_NO_NAMESPACES:-0}" = 1 ] && ! grep -qs '^namespaces' /etc/libvirt/qemu.conf && echo 'namespaces = []' >> /etc/libvirt/qemu.conf
pgrep -x virtlogd >/dev/null || virtlogd -d          # without it: "Failed to connect socket to '/run/libvirt/virtlogd-sock'"
virsh -c qemu:///system version >/dev/null 2>&1 || libvirtd -d
for _ in $(seq 1 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
virsh -c qemu:///system version >/dev/null || { echo "setup-host: libvirtd does not answer" >&2; exit 1; }
virsh() { command virsh -q -c qemu:///system "$@"; }
ts "isolated network $NET"
if ! virsh net-info "$NET" >/dev/null 2>&1; then
  xml=$(mktemp); trap 'rm -f "$xml"' EXIT
  cat > "$xml" <<XML
<network><name>$NET</name><bridge name='virbr9' stp='off' delay='0'/>
  <ip address='10.254.9.1' netmask='255.255.255.0'><dhcp><range start='10.254.9.10' end='10.254.9.200'/></dhcp></ip>
</network>
XML
  virsh net-define "$xml" >/dev/null
fi
virsh net-list --name | grep -x "$NET" >/dev/null || virsh net-start "$NET" >/dev/null
virsh net-autostart "$NET" >/dev/null
ts "storage pool $POOL at $POOL_DIR"
virsh pool-info "$POOL" >/dev/null 2>&1 || virsh pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
if ! virsh pool-list --name | grep -x "$POOL" >/dev/null; then   # not active: build (mkdir) and start
  virsh pool-build "$POOL" >/dev/null
  virsh pool-start "$POOL" >/dev/null
fi
virsh pool-autostart "$POOL" >/dev/null
ts "done"
