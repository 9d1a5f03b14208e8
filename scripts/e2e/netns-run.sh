#!/bin/bash
# Run a command in fresh mount+net+pid namespaces with tmpfs over libvirt's state dirs and /run:
# its own libvirtd/virtlogd/dnsmasq/sshd/qemu cannot collide with anything on the host, its bridges,
# taps and firewall rules exist only inside, and everything dies when the command exits.
# Usage: netns-run.sh COMMAND [ARGS...]   (run bootstrap.sh / setup-host.sh packages and build-image.sh first, outside)
# shellcheck disable=SC2016  # the inner script expands its own variables
set -euo pipefail
exec unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private -- bash -c '
  for d in /run /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt/qemu /etc/libvirt/storage; do
    mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
  ip link set lo up
  export PROVISIONER_E2E_NETNS=1
  # Not exec: this bash stays PID 1 of the namespace and reaps orphans. A PID 1 that does not
  # (python) leaves zombies, and libvirtd waits ~30 s for each QEMU capability probe process
  # it daemonized to vanish: minutes before `virsh` answers.
  "$@"; exit $?' netns-run "$@"
