#!/bin/bash
# Idempotent installer: Debian packages (libvirt, QEMU, OpenSSH, PostgreSQL, Ansible, the e2e guest image
# build and seed tools) and .venv with '.[dev]'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "[bootstrap] $*"; }
SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
PKGS=(libvirt-dev pkg-config gcc python3-dev python3-venv libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-clients qemu-system-x86 qemu-utils openssh-server openssh-client postgresql ansible-core
  dnsmasq-base iptables jq curl wrk
  mmdebstrap e2fsprogs genisoimage shellcheck)   # e2e: build-image.sh, NoCloud seed ISOs; lint of scripts/

installed=$(dpkg-query -W -f='${db:Status-Status}\n' "${PKGS[@]}" 2>/dev/null | grep -cx installed || true)
if [ "$installed" != "${#PKGS[@]}" ]; then
  # refresh the package lists unless some exist and were refreshed within a day
  if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 ||
     [ -z "$(find /var/lib/apt/lists -maxdepth 0 -mmin -1440)" ]; then
    say "apt-get update"; "${APT[@]}" update -q
  fi
  say "apt-get install (${#PKGS[@]} packages)"
  "${APT[@]}" install -y -q --no-install-recommends "${PKGS[@]}"
fi
say "apt packages ok"

if [ ! -x .venv/bin/python ]; then
  PY=$(command -v python3.11 || command -v python3)
  say "creating .venv with $PY"; "$PY" -m venv .venv
fi
say "venv ok ($(.venv/bin/python -V))"

[ -f pyproject.toml ] || { say "pyproject.toml not found in $PWD"; exit 1; }
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -e "$stamp" ]; then
  say "pip install -e '.[dev]'"
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
say "python dependencies ok"
