#!/bin/bash
# Full check: bootstrap, ruff, mypy, pytest on SQLite+PostgreSQL (throwaway cluster), then the e2e tier in a namespace.
# Usage: scripts/test.sh [PYTEST_ARGS...]   (args go to the non-e2e pytest run; SKIP_E2E=1 skips the e2e tier)
# The e2e guest image is cached in ${PROVISIONER_E2E_CACHE:-/var/cache/provisioner-e2e}/image (see scripts/e2e/cached-image.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
section() { printf '\n===== %s =====\n' "$*"; }
FAILED=()
step() {  # step NAME CMD...: run CMD, record failure, keep going
  local name=$1 t0=$SECONDS rc=0; shift; section "$name"
  "$@" || rc=$?
  if [ $rc = 0 ]; then echo "[$name: ok, $((SECONDS - t0))s]"; else echo "[$name: FAILED rc=$rc]"; FAILED+=("$name"); fi
}

section bootstrap
scripts/bootstrap.sh

step "ruff check" .venv/bin/ruff check .
step "ruff format" .venv/bin/ruff format --check .
step mypy .venv/bin/mypy
step hadolint .venv/bin/hadolint Dockerfile
step shellcheck shellcheck -S warning scripts/*.sh scripts/e2e/*.sh .ci/run

section "postgresql"
PGBIN=/usr/lib/postgresql/15/bin
PGDIR=$(mktemp -d /tmp/provisioner-pg.XXXXXX); chown postgres: "$PGDIR"
pg() { runuser -u postgres -- "$@"; }
trap 'pg "$PGBIN/pg_ctl" -D "$PGDIR" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"' EXIT
pg "$PGBIN/initdb" -D "$PGDIR" -A trust -U postgres >"$PGDIR.initdb.log" 2>&1 || { cat "$PGDIR.initdb.log"; exit 1; }
rm -f "$PGDIR.initdb.log"
for PGPORT in $(seq 55432 55499); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null && continue   # something listens there already
  pg "$PGBIN/pg_ctl" -D "$PGDIR" -w -l "$PGDIR/log" \
    -o "-k $PGDIR -p $PGPORT -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null 2>&1 && break
  PGPORT=
done
[ -n "$PGPORT" ] || { echo "PostgreSQL did not start:"; tail -20 "$PGDIR/log"; exit 1; }
pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres provisioner_test
export PROVISIONER_TEST_POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:$PGPORT/provisioner_test"
echo "PostgreSQL 15 on 127.0.0.1:$PGPORT (data $PGDIR)"

step "pytest (SQLite + PostgreSQL)" .venv/bin/pytest -m "not e2e" "$@"

if [ "${SKIP_E2E:-0}" = 1 ]; then
  section "e2e: skipped (SKIP_E2E=1)"
else
  # The Debian guest image (outside the namespace: mmdebstrap needs the mirror), cached per
  # version of build-image.sh; the guest tests skip, and this step fails, if it cannot be built.
  step "e2e guest image" scripts/e2e/cached-image.sh
  image_dir=$(scripts/e2e/cached-image.sh --dir)
  if [ -e "$image_dir/.complete" ]; then export PROVISIONER_E2E_IMAGE_DIR=$image_dir; fi
  # own net namespace: the PostgreSQL above is not reachable from inside, e2e uses SQLite
  step "e2e (libvirtd + QEMU in a private namespace)" \
    env -u PROVISIONER_TEST_POSTGRES_URL scripts/e2e/netns-run.sh scripts/e2e/run.sh
fi

section "summary"
if [ ${#FAILED[@]} -gt 0 ]; then printf 'FAILED: %s\n' "${FAILED[@]}"; exit 1; fi
echo "all steps passed"
