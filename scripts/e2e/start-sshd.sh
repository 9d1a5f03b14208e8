#!/bin/bash
# Private OpenSSH sshd on 127.0.0.1:PORT (key auth only, own host key, own authorized_keys) = "provisioner node".
# Usage: start-sshd.sh DIR PORT CLIENT_PUBKEY      (stop: kill $(cat DIR/sshd.pid))
set -euo pipefail
DIR=${1:-/tmp/provisioner-e2e/sshd}; PORT=${2:-2222}; PUB=${3:-/tmp/provisioner-e2e/keys/id_ed25519.pub}
mkdir -p "$DIR" /run/sshd; chmod 700 "$DIR"
[ -f "$DIR/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/hostkey"
install -m 600 "$PUB" "$DIR/authorized_keys"
cat > "$DIR/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/hostkey
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
LogLevel INFO
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -t -f "$DIR/sshd_config"
rm -f "$DIR/sshd.pid"
/usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
# sshd forks before it binds: only the pid file (written once it listens) says it started.
for _ in $(seq 1 50); do [ -s "$DIR/sshd.pid" ] && break; sleep 0.1; done
[ -s "$DIR/sshd.pid" ] || { echo "sshd did not start on 127.0.0.1:$PORT:" >&2; tail -5 "$DIR/sshd.log" >&2; exit 1; }
echo "sshd pid $(cat "$DIR/sshd.pid") on 127.0.0.1:$PORT"
