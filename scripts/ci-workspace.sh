#!/bin/bash
# CI recipe: create a workspace, wait until it runs, run a command with its details, delete it.
# Usage: PROVISIONER_URL=… PROVISIONER_TOKEN=… scripts/ci-workspace.sh [--plan P] [--image I] -- CMD…
# CMD sees WORKSPACE_ID, WORKSPACE_NAME, WORKSPACE_NODE, WORKSPACE_HOST (Tailscale name, if any).
set -euo pipefail
: "${PROVISIONER_URL:?set PROVISIONER_URL, e.g. https://provisioner.example}"
: "${PROVISIONER_TOKEN:?set PROVISIONER_TOKEN (provisioner token create --role developer --owner ci)}"
plan=small image=debian-12 name="ci-${GITHUB_RUN_ID:-$$}-$RANDOM" timeout=900
while [ $# -gt 0 ]; do
  case $1 in
    --plan) plan=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "ci-workspace: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "ci-workspace: give a command after --" >&2; exit 2; }

api() {  # api METHOD PATH [JSON]: print the answer's body, fail with the server's message on 4xx/5xx
  local out status
  out=$(curl -sS -X "$1" "$PROVISIONER_URL$2" -H "Authorization: Bearer $PROVISIONER_TOKEN" \
        -H 'Content-Type: application/json' -H "Idempotency-Key: $name" ${3:+-d "$3"} -w '\n%{http_code}')
  status=${out##*$'\n'}; out=${out%$'\n'*}
  if [ "$status" -ge 400 ]; then
    echo "ci-workspace: $1 $2: HTTP $status: $(jq -r '.error.message // .' <<<"$out")" >&2; return 1
  fi
  printf '%s\n' "$out"
}

wait_for() {  # wait_for OPERATION_ID: poll until the operation ends; fail unless it succeeded
  local op state deadline=$((SECONDS + timeout))
  while :; do
    op=$(api GET "/v1/operations/$1")
    state=$(jq -r .state <<<"$op")
    case $state in
      succeeded) return 0 ;;
      failed|cancelled) echo "ci-workspace: operation $1 $state: $(jq -r .error <<<"$op")" >&2; return 1 ;;
    esac
    [ $SECONDS -lt $deadline ] || { echo "ci-workspace: operation $1 still $state after ${timeout}s" >&2; return 1; }
    sleep 2
  done
}

created=$(api POST /v1/workspaces "$(jq -nc --arg p "$plan" --arg i "$image" --arg n "$name" \
  '{plan: $p, image: $i, name: $n}')")
ws=$(jq -r .workspace.id <<<"$created")
echo "ci-workspace: $name ($ws) requested"
cleanup() {
  echo "ci-workspace: deleting $name"
  op=$(api DELETE "/v1/workspaces/$ws") && wait_for "$(jq -r .id <<<"$op")" || true
}
trap cleanup EXIT
wait_for "$(jq -r .operation.id <<<"$created")"
info=$(api GET "/v1/workspaces/$ws")
echo "ci-workspace: $name is $(jq -r .state <<<"$info") on $(jq -r .node <<<"$info")"
WORKSPACE_ID=$ws WORKSPACE_NAME=$name WORKSPACE_NODE=$(jq -r .node <<<"$info") \
WORKSPACE_HOST=$(jq -r '.tailscale.hostname // ""' <<<"$info") "$@"
