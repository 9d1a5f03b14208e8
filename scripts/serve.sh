#!/bin/bash
# Install what is missing (bootstrap.sh), then run the provisioner service: scripts/serve.sh [ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
exec .venv/bin/provisioner serve "$@"
