#!/bin/sh
# Build dist/pbox.pyz: pbox and its pure-Python dependencies in one zip archive that
# runs with a system python3 (3.9 or newer), plus the compiled modules of zstandard and
# isal for each CPython version from 3.9 on (see zipapp/_pbox_launcher.py for how they load).
#
#   scripts/build_pyz.sh [OUTPUT]       (needs python3 with pip; downloads wheels)
#
# Environment: PYTHON (default python3), PBOX_PYZ_PYTHONS (default "39 310 311 312 313").
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-dist/pbox.pyz}
VERSIONS=${PBOX_PYZ_PYTHONS:-"39 310 311 312 313"}
ARCH=$(uname -m)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
stage="$work/stage"
mkdir -p "$stage" "$work/pure" "$work/native" "$(dirname "$OUT")"

# 1. pbox itself, without caches.
tar -cf - --exclude=__pycache__ --exclude='*.pyc' pbox | tar -xf - -C "$stage"

# 2. Pure-Python wheels, chosen for the oldest supported Python.
grep -v '^#' zipapp/requirements.txt | grep . > "$work/req.txt"
$PY -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform any --python-version 3.9 --implementation py -d "$work/pure" -r "$work/req.txt"
for whl in "$work"/pure/*.whl; do
    $PY - "$whl" "$stage" <<'PYEOF'
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        top = name.split("/")[0]
        if top.endswith(".dist-info") or top.endswith(".data"):
            continue
        z.extract(name, dest)
PYEOF
done

# 3. The compiled modules per CPython version, only the files they need: zstandard's C
#    backend, and isal's inflater (isal_zlib with the two modules it loads).
for v in $VERSIONS; do
    pyver="$(echo "$v" | cut -c1).$(echo "$v" | cut -c2-)"
    for req in $(grep -v '^#' zipapp/native.txt | grep .); do
        pkg=${req%%==*}
        d="$work/native/$v/$pkg"
        mkdir -p "$d"
        if ! $PY -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version "$pyver" --platform "manylinux2014_$ARCH" \
            --platform "manylinux_2_17_$ARCH" -d "$d" "$req"; then
            echo "note: no $pkg wheel for CPython $pyver on $ARCH; that Python does without it" >&2
            continue
        fi
        target="$stage/_native/cpython-$v/$pkg"
        mkdir -p "$target"
        $PY - "$d"/*.whl "$target" "$pkg" <<'PYEOF'
import os, sys, zipfile
whl, target, pkg = sys.argv[1:]
KEEP = {
    "zstandard": lambda base: base == "__init__.py" or base.startswith("backend_c."),
    "isal": lambda base: base in ("__init__.py", "_version.py", "LICENSE")
    or base.split(".")[0] in ("_isal", "isal_zlib", "igzip_lib") and base.endswith(".so"),
}[pkg]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if ".dist-info/" in name and base.startswith("LICENSE"):
            with open(os.path.join(target, "LICENSE-" + pkg), "wb") as f:
                f.write(z.read(name))  # the package's own licence, next to its files
            continue
        if name.startswith(pkg + "/") and name.count("/") <= 2 and KEEP(base):
            if base == "LICENSE":
                base = "LICENSE-" + name.split("/")[-2]  # isal/isa-l/LICENSE
            with open(os.path.join(target, base), "wb") as f:
                f.write(z.read(name))
PYEOF
        if command -v strip >/dev/null 2>&1; then
            strip --strip-unneeded "$target"/*.so
        fi
    done
done

# 4. Bytecode for the building Python, next to each source (zipimport's layout), as
#    unchecked hash-based .pyc: a zip cannot cache bytecode, so without these every start
#    would compile pbox again.  Other Python versions ignore them and use the sources.
$PY -m compileall -q -b --invalidation-mode unchecked-hash -x '/_native/' -s "$stage" \
    -p pbox.pyz "$stage" >/dev/null

# 5. The launcher (zipapp/_pbox_launcher.py, with __main__.py for "python3 pbox.pyz")
#    and the shell script ahead of the zip (zipapp/launch.sh), with the payload id (a
#    hash of every bundled file and of these three: where the first run unpacks the
#    Python part) and pbox's version; then the archive (entries sorted, so the build is
#    reproducible).
$PY - "$stage" zipapp "$work/launch.sh" <<'PYEOF'
import hashlib, os, re, shutil, sys, zlib
stage, zipapp, launch = sys.argv[1:4]
# the stamp of each bundled compiled package, as zipapp/_pbox_launcher.py computes it
# from the archive's entries (sums of their CRC-32s and sizes)
stamps = {}
native = os.path.join(stage, "_native")
for tag in sorted(os.listdir(native)) if os.path.isdir(native) else []:
    for name in sorted(os.listdir(os.path.join(native, tag))):
        crc = size = 0
        for root, dirs, files in os.walk(os.path.join(native, tag, name)):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    data = fh.read()
                crc += zlib.crc32(data)
                size += len(data)
        stamps[f"{tag}/{name}"] = f"{crc:x}-{size:x}"
h = hashlib.sha256()
for root, dirs, files in os.walk(stage):
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(root, name)
        h.update(os.path.relpath(path, stage).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
for name in ("_pbox_launcher.py", "__main__.py", "launch.sh"):
    with open(os.path.join(zipapp, name), "rb") as f:
        h.update(b"zipapp/" + name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
payload_id = h.hexdigest()[:32]
with open(os.path.join(stage, "pbox", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(zipapp, "_pbox_launcher.py")) as f:
    text = f.read()
text = text.replace('"@PAYLOAD_ID@"', '"%s"' % payload_id)
text = text.replace('"@VERSION@"', '"%s"' % version)
text = text.replace('"@NATIVE_STAMPS@"', repr(stamps))
with open(os.path.join(stage, "_pbox_launcher.py"), "w") as f:
    f.write(text)
shutil.copyfile(os.path.join(zipapp, "__main__.py"), os.path.join(stage, "__main__.py"))
with open(os.path.join(zipapp, "launch.sh")) as f:
    text = f.read()
assert text.count("@PAYLOAD_ID@") == 1 and "'" not in text.split("-c '", 1)[1].split("'")[0]
with open(launch, "w") as f:
    f.write(text.replace("@PAYLOAD_ID@", payload_id))
PYEOF
# Their byte code too: zipimport takes a .pyc when it is for the running Python.
$PY -m compileall -q -b --invalidation-mode unchecked-hash -d pbox.pyz \
    "$stage/_pbox_launcher.py" "$stage/__main__.py" >/dev/null
$PY - "$stage" "$OUT" "$work/launch.sh" <<'PYEOF'
import os, sys, zipfile
stage, out, launch = sys.argv[1:4]
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    with open(launch, "rb") as script:
        f.write(script.read())
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for root, dirs, files in os.walk(stage):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                arc = os.path.relpath(path, stage)
                info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
                with open(path, "rb") as src:
                    z.writestr(info, src.read())
os.chmod(tmp, 0o755)
os.replace(tmp, out)
PYEOF
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
