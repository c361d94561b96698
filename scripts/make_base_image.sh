#!/usr/bin/env bash
# Makes a Debian bookworm base image without pulling from any registry: debootstrap a minimal
# root file system and `docker import` it. For machines that reach no container registry (CI
# here); elsewhere `make build BASE_IMAGE=debian:bookworm-slim DEVICE=cpu` does the same job.
#   scripts/make_base_image.sh [IMAGE]   (default local/bookworm:base; skipped if it exists)
set -euo pipefail
image=${1:-local/bookworm:base}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image exists"
  exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >/tmp/debootstrap.log 2>&1 || { tail -30 /tmp/debootstrap.log; exit 1; }
# A machine whose HTTPS passes an intercepting proxy has the proxy's CA in its trust store:
# give it to the image too, or pip inside the build fails. Copied at run time, never committed.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
docker image ls "$image"
