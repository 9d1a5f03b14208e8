#!/bin/bash
# The e2e tier; run it inside netns-run.sh: start libvirtd/virtlogd + isolated network, then pytest -m e2e.
# Usage: scripts/e2e/netns-run.sh scripts/e2e/run.sh [PYTEST_ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ -n "${PROVISIONER_E2E_NETNS:-}" ] || { echo "run.sh: run me via scripts/e2e/netns-run.sh" >&2; exit 2; }
scripts/e2e/setup-host.sh daemons
if [ ! -d tests/e2e ]; then echo "run.sh: no tests/e2e yet, nothing to run"; exit 0; fi
.venv/bin/pytest -m e2e tests/e2e "$@"
