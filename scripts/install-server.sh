#!/bin/bash
# Prepare a Debian 12 machine as a provisioner node: libvirt + QEMU, a storage pool, and an
# OpenSSH port (2222) that lets the provisioner forward libvirt's socket. Idempotent.
# Usage (as root, on the node):
#   install-server.sh "ssh-ed25519 AAAA… provisioner"   # the provisioner's public key
#   (the key is in the provisioner's data dir: .provisioner/keys/id_ed25519.pub)
set -euo pipefail
KEY=${1:-}
PORT=${PROVISIONER_NODE_PORT:-2222}
POOL=${PROVISIONER_NODE_POOL:-default}
POOL_DIR=${PROVISIONER_NODE_POOL_DIR:-/var/lib/libvirt/images}
say() { echo "[install-server] $*"; }

[ "$(id -u)" = 0 ] || { echo "install-server.sh: run me as root on the node" >&2; exit 2; }
case "$KEY" in
  ssh-ed25519\ *|ecdsa-sha2-*\ *|ssh-rsa\ *) ;;
  *) echo "install-server.sh: pass the provisioner's public key line as the first argument" >&2
     exit 2 ;;
esac

say "packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends libvirt-daemon-system qemu-system-x86 qemu-utils \
  openssh-server dnsmasq-base

say "sshd on port $PORT (keys only, libvirt socket forwarding allowed)"
cat > /etc/ssh/sshd_config.d/provisioner.conf <<CFG
Port 22
Port $PORT
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
CFG
sshd -t
install -d -m 700 /root/.ssh
touch /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
grep -qxF "$KEY" /root/.ssh/authorized_keys || echo "$KEY" >> /root/.ssh/authorized_keys
systemctl reload ssh || systemctl restart ssh

say "storage pool $POOL at $POOL_DIR"
if ! virsh -c qemu:///system pool-info "$POOL" >/dev/null 2>&1; then
  virsh -c qemu:///system pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
  virsh -c qemu:///system pool-build "$POOL" >/dev/null
fi
virsh -c qemu:///system pool-list --name | grep -qx "$POOL" ||
  virsh -c qemu:///system pool-start "$POOL" >/dev/null
virsh -c qemu:///system pool-autostart "$POOL" >/dev/null

say "network default (NAT, so workspaces reach the internet)"
virsh -c qemu:///system net-list --name | grep -qx default ||
  virsh -c qemu:///system net-start default >/dev/null
virsh -c qemu:///system net-autostart default >/dev/null

virt=qemu
[ -w /dev/kvm ] && virt=auto
say "done. Add this node to the provisioner (nodes file entry):"
cat <<ENTRY
  [nodes.$(hostname -s)]
  ssh_host = "$(hostname -f)"
  ssh_port = $PORT
  ssh_user = "root"
  host_key = "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"
  pool = "$POOL"
  network = "default"
  virt_type = "$virt"
ENTRY
say "its host key fingerprint, to compare with what the provisioner shows:"
ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
