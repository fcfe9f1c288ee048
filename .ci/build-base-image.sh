#!/usr/bin/env bash
# Make a local base image with Python 3.11 without any image registry, for
# building infra/Dockerfile where python:3.11-slim cannot be pulled (CI):
#
#   docker build -f infra/Dockerfile --build-arg BASE_IMAGE="$(.ci/build-base-image.sh)" .
#
# mmdebstrap builds a minimal Debian bookworm root filesystem (Debian's python3
# is 3.11 there) with python3, python3-venv and ca-certificates from the Debian
# archive, and `docker import` turns it into an image. Only the Debian archive
# is reached. Local CA certificates of this machine (/usr/local/share/ca-certificates)
# are added to the image's trust store, so that pip inside `docker build` works
# behind the same TLS-inspecting egress proxy as the host.
#
# Usage: .ci/build-base-image.sh [TAG]     prints the tag on stdout, progress on stderr
#   TAG            default rtforge-local/python:3.11-bookworm
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
#   REBUILD=1      build even when an image of this recipe exists already
set -euo pipefail

tag="${1:-rtforge-local/python:3.11-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="bookworm"
packages="python3,python3-venv,ca-certificates"
local_cas=/usr/local/share/ca-certificates

say() { echo "build-base-image: $*" >&2; }
die() { say "$*"; exit 1; }

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"

# The recipe: this script, its inputs and the local CAs. An image with the same
# recipe is reused (the build takes about a minute).
recipe="$({
    cat "$0"
    echo "$tag $mirror $suite $packages"
    if [[ -d "$local_cas" ]]; then find "$local_cas" -name '*.crt' -type f -exec cat {} +; fi
} | sha256sum | cut -c1-16)"
existing="$(docker image inspect --format '{{index .Config.Labels "org.rtforge.base-recipe"}}' \
    "$tag" 2>/dev/null || true)"
if [[ "${REBUILD:-0}" != 1 && "$existing" == "$recipe" ]]; then
    say "$tag is up to date (recipe $recipe)"
    echo "$tag"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Local CAs go in through a directory of their own (the hook runs outside the chroot).
mkdir -p "$work/cas"
if [[ -d "$local_cas" ]]; then
    find "$local_cas" -name '*.crt' -type f -exec cp {} "$work/cas/" \;
fi
say "mmdebstrap $suite ($packages) from $mirror, $(find "$work/cas" -name '*.crt' | wc -l) local CA(s)"

start=$SECONDS
# The hooks' "$1" is the root filesystem, expanded by mmdebstrap, not here.
# shellcheck disable=SC2016
# No docs, man pages or locales; merged /usr without the usrmerge package (and its perl).
if ! mmdebstrap --variant=minbase --include="$packages" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook="cp -r $work/cas/. \"\$1/usr/local/share/ca-certificates/\"" \
        --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
        "$suite" "$work/rootfs.tar" "$mirror" >"$work/mmdebstrap.log" 2>&1; then
    tail -n 30 "$work/mmdebstrap.log" >&2
    die "mmdebstrap failed"
fi
say "root filesystem in $((SECONDS - start))s ($(du -h "$work/rootfs.tar" | cut -f1))"

# What python:3.11-slim's users rely on: python3 on PATH, a UTF-8 locale.
# PIP_CERT: pip in a venv uses its own CA bundle unless told to use the system's.
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change "LABEL org.rtforge.base-recipe=$recipe" \
    --change "LABEL org.opencontainers.image.description=\"Debian $suite with python3, local base for infra/Dockerfile\"" \
    --change 'CMD ["python3"]' \
    "$work/rootfs.tar" "$tag" >/dev/null

version="$(docker run --rm "$tag" python3 -c \
    'import ensurepip, ssl, sys, venv; print("%d.%d.%d" % sys.version_info[:3])')" \
    || die "$tag does not run python3"
[[ "$version" == 3.11.* ]] || die "$tag has Python $version, expected 3.11"
say "$tag: Python $version, $(docker image inspect --format '{{.Size}}' "$tag" \
    | awk '{printf "%.0f MB", $1 / 1e6}'), $((SECONDS - start))s"
echo "$tag"
