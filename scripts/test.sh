#!/bin/bash
# Run pbox's whole test suite on a Debian machine, as CI does:
#
#   sudo scripts/test.sh [PYTEST ARGS...]
#
# It installs the system packages the tests use (the real distribution registry,
# busybox-static, uidmap, skopeo, fuse-overlayfs, ...), creates two unprivileged test
# users (`pboxtest` with /etc/subuid and /etc/subgid ranges, `nosub` without), builds
# dist/pbox.pyz, then runs:
#   1. ruff over the tree,
#   2. the suite as `pboxtest` against the source tree,
#   3. the end-to-end tests as `pboxtest` against dist/pbox.pyz,
#   4. the id-mapping tests as `nosub` (no subordinate ids: the single mapping),
#   5. the root-mode tests as root.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: run as root (sudo): it installs packages and creates test users" >&2
    exit 2
fi

# -- system packages -----------------------------------------------------------------
PKGS="python3 python3-venv python3-pip docker-registry busybox-static uidmap skopeo
      fuse-overlayfs slirp4netns passt openssl apache2-utils zstd binutils iproute2 git
      ca-certificates procps podman runc libgcrypt20 libssl3"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian ships these 0666; some VMs make them 0600.
chmod 0666 /dev/fuse /dev/net/tun 2>/dev/null || true

# -- test users ------------------------------------------------------------------------
ensure_user() { id "$1" >/dev/null 2>&1 || useradd -m -s /bin/bash "$1"; }
ensure_user pboxtest
ensure_user nosub
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    sed -i '/^nosub:/d' "$f"
    grep -q '^pboxtest:' "$f" || echo "pboxtest:300000:65536" >> "$f"
done

# -- a copy of the tree and a venv the test users can read ------------------------------
WORK=$(mktemp -d /tmp/pbox-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK"
tar -cf - --anchored --exclude=./.git --exclude=./dist --exclude=./build \
    --no-anchored --exclude=__pycache__ . \
    | (mkdir "$WORK/src" && tar -xf - -C "$WORK/src")
/usr/bin/python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check \
    click requests zstandard isal platformdirs pytest pytest-timeout ruff
# Bytecode written now, as root: the test users cannot write __pycache__ here, and every
# pbox subprocess would otherwise compile the whole package again.
"$WORK/venv/bin/python" -m compileall -q "$WORK/src/pbox" "$WORK/src/tests" >/dev/null
chmod -R a+rX "$WORK"

echo "== ruff"
"$WORK/venv/bin/ruff" check "$WORK/src"

echo "== building dist/pbox.pyz"
PYTHON="$WORK/venv/bin/python" "$WORK/src/scripts/build_pyz.sh" "$WORK/src/dist/pbox.pyz"
chmod -R a+rX "$WORK/src/dist"

as_user_ok() { local rc=0; as_user "$@" || rc=$?; [ "$rc" = 5 ] && rc=0; return "$rc"; }
as_user() {
    local user=$1; shift
    local home
    home=$(getent passwd "$user" | cut -d: -f6)
    runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
        PATH="$WORK/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
        LANG=C.UTF-8 CI="${CI:-}" PBOX_TEST_PYZ="${PBOX_TEST_PYZ:-}" "$@"
}

PYTEST=(pytest_ok "$WORK/venv/bin/pytest" -p no:cacheprovider -q -ra --rootdir "$WORK/src")
# pytest exits 5 when a selection has no test (e.g. no root-only test yet): not a failure.
pytest_ok() { local rc=0; "$@" || rc=$?; [ "$rc" = 5 ] && rc=0; return "$rc"; }
cd "$WORK/src"
status=0

echo "== tests as an unprivileged user with subordinate ids (pboxtest)"
as_user_ok pboxtest "${PYTEST[@]:1}" -m "not root" tests "$@" || status=1

echo "== end-to-end tests through dist/pbox.pyz (pboxtest)"
PBOX_TEST_PYZ="$WORK/src/dist/pbox.pyz" as_user_ok pboxtest "${PYTEST[@]:1}" -m "not root" \
    tests/e2e "$@" || status=1

echo "== id-mapping tests as an unprivileged user without subordinate ids (nosub)"
as_user_ok nosub "${PYTEST[@]:1}" -m "idmap and not root" tests "$@" || status=1

echo "== root-mode tests (root)"
"${PYTEST[@]}" -m "root or idmap" tests "$@" || status=1

exit $status
