#!/bin/bash
# The e2e guest image, built by build-image.sh once per version of that script (keyed by its sha256)
# into ${PROVISIONER_E2E_CACHE:-/var/cache/provisioner-e2e}/image/KEY; other builds older than a day
# are removed.
# Usage: cached-image.sh            build unless cached; prints the image directory last
#        cached-image.sh --dir      only print the directory (whether or not it is built yet)
# Run outside netns-run.sh: mmdebstrap needs the Debian mirror.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CACHE=${PROVISIONER_E2E_CACHE:-/var/cache/provisioner-e2e}/image
KEY=$(sha256sum scripts/e2e/build-image.sh | cut -c1-16)
DIR=$CACHE/$KEY
[ "${1:-}" = --dir ] && { echo "$DIR"; exit 0; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # another run building the same image: wait for it, then use its result
if [ -e "$DIR/.complete" ]; then
  echo "cached image (build-image.sh sha256 $KEY...)"
else
  echo "building the image (build-image.sh sha256 $KEY... not cached)"
  t0=$SECONDS
  rm -rf "$DIR.partial"
  scripts/e2e/build-image.sh "$DIR.partial"
  touch "$DIR.partial/.complete"
  rm -rf "$DIR"; mv "$DIR.partial" "$DIR"
  echo "image built in $((SECONDS - t0))s"
  # Builds of other versions of the script, unless recent: a run of another checkout may use one.
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" -mmin +1440 -exec rm -rf {} +
fi
(cd "$DIR" && ls -l base.qcow2 vmlinuz initrd.img cmdline && echo "cmdline: $(cat cmdline)")
echo "$DIR"
