#!/bin/sh
# The main job, offline: start a local registry, publish a tiny busybox image to it
# (built here from the busybox-static binary and pushed with skopeo), then
# pull it with pbox and run a container from it, rootless.
#
#   scripts/demo.sh [PBOX]        PBOX: how to run pbox (default: dist/pbox.pyz)
#
# Needs: docker-registry, skopeo, busybox-static, uidmap (Debian packages).
set -eu
cd "$(dirname "$0")/.."
PBOX=${1:-"python3 dist/pbox.pyz"}
if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ]; then
    echo "demo: run this as your own user, not with sudo" >&2
    exit 2
fi
work=$(mktemp -d)
reg_pid=""
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# 1. a registry on a free port of 127.0.0.1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
log: {level: error}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!

# 2. a busybox image in an OCI layout: one layer with the static binary and its applets
python3 - "$work/oci" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{d}", "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    def add(name, data=None, mode=0o755, link=None):
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = mode, 0
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, link
        elif data is None:
            info.type = tarfile.DIRTYPE
        else:
            info.size = len(data)
        t.addfile(info, io.BytesIO(data) if data is not None else None)
    for d in ("bin", "etc", "tmp"):
        add(d)
    with open("/bin/busybox", "rb") as f:
        add("bin/busybox", f.read())
    for applet in ("sh", "echo", "ls", "cat", "id", "uname", "hostname"):
        add("bin/" + applet, link="busybox")
    add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    add("etc/group", b"root:x:0:\n", 0o644)
tar = raw.getvalue()
layer = blob(gzip.compress(tar, mtime=0))
config = blob(json.dumps({
    "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine,
                                                                 os.uname().machine),
    "os": "linux", "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
}).encode())
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
}).encode())
with open(f"{out}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "busybox"}}]}, f)
with open(f"{out}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion": "1.0.0"}')
PY
for i in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" \
        2>/dev/null && break
    sleep 0.1
done
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:busybox" \
    "docker://127.0.0.1:$port/demo/busybox:latest"

# 3. pbox: pull, list, run
ref="127.0.0.1:$port/demo/busybox"
$PBOX pull "$ref"
$PBOX images "$ref"
$PBOX run --rm "$ref" sh -c 'echo "hello from a rootless pbox container: $(uname -sm), uid $(id -u)"'
$PBOX rmi "$ref" >/dev/null
