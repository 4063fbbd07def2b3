#!/usr/bin/env bash
# Makes `debian:bookworm-slim` available to podman without a container registry: built
# with mmdebstrap from Debian's mirror (minbase, merged /usr, no docs, man pages or
# locales: about what Debian's own slim image holds), imported as
# docker.io/library/debian:bookworm-slim. The tarball is kept in
# ${RUNBOOKD_IMAGE_CACHE:-/var/tmp/runbookd-images} and reused: a second run costs a
# `podman image exists`. Needs root, mmdebstrap and podman. Used by tests/daemon/deploy.rs.
set -euo pipefail
cache="${RUNBOOKD_IMAGE_CACHE:-/var/tmp/runbookd-images}"
tar="$cache/debian-bookworm-slim.tar"
image=docker.io/library/debian:bookworm-slim
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
podman image exists "$image" && exit 0
if [ ! -s "$tar" ]; then
  mirror="${RUNBOOKD_DEBIAN_MIRROR:-http://deb.debian.org}"
  mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$tar.partial" \
    "deb $mirror/debian bookworm main" "deb $mirror/debian bookworm-updates main" \
    "deb $mirror/debian-security bookworm-security main"
  mv "$tar.partial" "$tar"
fi
podman import --quiet --change 'CMD ["bash"]' "$tar" "$image" >/dev/null
