"""Images for the benchmarks: built once into OCI layouts under a cache dir, pushed with skopeo.

* ``debian``: a one-layer Debian ``minbase`` made by ``debootstrap`` (needs root and a
  reachable Debian mirror: the one apt is configured with), with apt's caches and lists
  dropped as the official images do (about 120 MB of files, about 50 MB gzipped).  When
  debootstrap cannot run, a synthetic tree of about the same shape (many files, about
  50 MB gzipped) stands in, and the image's ``kind`` says so.
* ``busybox``: one layer with the host's static busybox and a symlink per applet.

Layers are gzip (level 6) tars with numeric owners, streamed: tar -> sha256 (diff id)
-> gzip -> sha256 (digest) -> blob file.  A cache entry is written under a temp name and
renamed when complete; ``CACHE_VERSION`` is part of its name, so changing how an image is
made invalidates old entries.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import Optional

from common import BenchError, log, require_tool

CACHE_VERSION = 1
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CREATED = "2024-01-02T03:04:05Z"
MTIME = 1704164645
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "bookworm"
# Left out of the debootstrap layer: kernel file systems, device nodes (an image has an
# empty /dev) and apt's downloaded packages and lists.
DEBIAN_EXCLUDES = ("./dev/*", "./proc/*", "./sys/*", "./var/cache/apt/*",
                   "./var/lib/apt/lists/*", "./debootstrap")


def goarch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pbox-bench")


@dataclass
class CachedImage:
    name: str
    layout: str  # OCI layout directory
    tag: str
    kind: str  # "debootstrap", "synthetic", "busybox"
    files: int
    size: int  # bytes of the uncompressed layer tar
    compressed: int  # bytes of the gzipped layer

    def describe(self) -> str:
        return (f"{self.name} ({self.kind}): 1 layer, {self.files} entries, "
                f"{self.size / 1e6:.0f} MB tar, {self.compressed / 1e6:.1f} MB gzip")


# -- writing a layout -------------------------------------------------------------------------

class _LayerWriter(io.RawIOBase):
    """A write-only file: hashes the tar, gzips it, hashes and stores the gzip."""

    def __init__(self, path: str):
        super().__init__()
        self.out = open(path, "wb")  # noqa: SIM115 (closed by finish())
        self.diff = hashlib.sha256()
        self.digest = hashlib.sha256()
        self.size = 0
        self.compressed = 0
        self.z = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = bytes(b)
        self.diff.update(b)
        self.size += len(b)
        self._emit(self.z.compress(b))
        return len(b)

    def _emit(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.compressed += len(data)
            self.out.write(data)

    def finish(self) -> None:
        self._emit(self.z.flush())
        self.out.close()


def _write_blob(blobs: str, data: bytes) -> dict:
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + hexd, "size": len(data)}


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class LayoutBuilder:
    """An OCI layout with one image of one gzip layer."""

    def __init__(self, directory: str):
        self.dir = directory
        self.blobs = os.path.join(directory, "blobs", "sha256")
        os.makedirs(self.blobs)
        self.layer = _LayerWriter(os.path.join(self.blobs, "layer.tmp"))

    def finish(self, tag: str, cmd: list, created_by: str) -> tuple:
        self.layer.finish()
        hexd = self.layer.digest.hexdigest()
        os.rename(os.path.join(self.blobs, "layer.tmp"), os.path.join(self.blobs, hexd))
        diff_id = "sha256:" + self.layer.diff.hexdigest()
        config = {
            "created": CREATED, "architecture": goarch(), "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": CREATED, "created_by": created_by}],
        }
        config_desc = dict(_write_blob(self.blobs, _canonical(config)), mediaType=OCI_CONFIG)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": "sha256:" + hexd,
                        "size": self.layer.compressed}],
        }
        man_desc = dict(_write_blob(self.blobs, _canonical(manifest)), mediaType=OCI_MANIFEST)
        man_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        with open(os.path.join(self.dir, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [man_desc]}, f)
        with open(os.path.join(self.dir, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        return self.layer.size, self.layer.compressed


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, link
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = MTIME
    return ti


# -- the images -------------------------------------------------------------------------------

def _busybox_binary() -> str:
    for cand in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if cand and os.path.isfile(cand):
            with open(cand, "rb") as f:
                data = f.read()
            # A static binary has no PT_INTERP; good enough: look for the loader path.
            if b"/lib64/ld-linux" not in data and b"/lib/ld-linux" not in data:
                return cand
    raise BenchError("the benchmarks need a static busybox (package busybox-static)")


def build_busybox(dest: str) -> tuple:
    binary = _busybox_binary()
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    b = LayoutBuilder(dest)
    files = 0
    with tarfile.open(fileobj=b.layer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "root", "tmp"):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
            files += 1
        with open(binary, "rb") as f:
            data = f.read()
        tar.addfile(_tarinfo("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        files += 1
        for name in sorted(set(applets) - {"busybox"}):
            tar.addfile(_tarinfo(f"bin/{name}", tarfile.SYMTYPE, 0o777, link="busybox"))
            files += 1
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            raw = text.encode()
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(raw)), io.BytesIO(raw))
            files += 1
    size, comp = b.finish("latest", ["sh"], "busybox static binary and applet links")
    return "busybox", files, size, comp


def apt_mirror(suite: str = SUITE) -> Optional[str]:
    """The Debian mirror apt is configured with for ``suite`` (deb822 or one-line form)."""
    paths = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += [os.path.join(d, n) for n in sorted(os.listdir(d))
                  if n.endswith((".list", ".sources"))]
    for path in paths:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ")):
                        k, v = line.split(":", 1)
                        fields[k.strip().lower()] = v.split()
                if suite in fields.get("suites", []) and "deb" in fields.get("types", []):
                    return fields.get("uris", [None])[0]
        else:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and suite in parts:
                    uri = [p for p in parts[1:] if "://" in p]
                    if uri:
                        return uri[0]
    return None


def build_debootstrap(dest: str, workdir: str) -> tuple:
    if os.getuid() != 0:
        raise BenchError("debootstrap needs root")
    require_tool("debootstrap")
    rootfs = os.path.join(workdir, "rootfs")
    argv = ["debootstrap", "--variant=minbase", SUITE, rootfs]
    mirror = apt_mirror()
    if mirror:
        argv.append(mirror)
    log(f"running {' '.join(argv)} (once; the result is cached)")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"debootstrap failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    tar_argv = ["tar", "--numeric-owner", "--sort=name", "-C", rootfs, "-cf", "-"]
    tar_argv += [f"--exclude={x}" for x in DEBIAN_EXCLUDES] + ["."]
    files = int(subprocess.run(
        ["sh", "-c", f"{' '.join(tar_argv)} | tar -tf - | wc -l"], capture_output=True,
        text=True, check=True).stdout.strip())
    b = LayoutBuilder(dest)
    tar = subprocess.Popen(tar_argv, stdout=subprocess.PIPE)
    while True:
        chunk = tar.stdout.read(1 << 20)
        if not chunk:
            break
        b.layer.write(chunk)
    if tar.wait() != 0:
        raise BenchError("tar of the debootstrap tree failed")
    size, comp = b.finish(SUITE, ["bash"], f"debootstrap --variant=minbase {SUITE}")
    shutil.rmtree(rootfs)
    return "debootstrap", files, size, comp


def build_synthetic(dest: str, target_mb: float = 120.0, seed: int = 1) -> tuple:
    """Many files, about half of their bytes incompressible: ~50 MB of gzip from ~120 MB."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    b = LayoutBuilder(dest)
    total, files, n = 0, 0, 0
    limit = int(target_mb * 1e6)
    with tarfile.open(fileobj=b.layer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo("usr", tarfile.DIRTYPE, 0o755))
        while total < limit:
            d = f"usr/share/d{n // 40:03d}"
            if n % 40 == 0:
                tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
                files += 1
            size = int(rng.lognormvariate(9.3, 1.4))  # median ~11 KB, a long tail
            size = min(size, 4_000_000)
            if rng.random() < 0.45:
                data = rng.randbytes(size)
            else:
                data = b" ".join(rng.choice(words) for _ in range(size // 5 + 1))[:size]
            tar.addfile(_tarinfo(f"{d}/f{n:05d}", tarfile.REGTYPE, 0o644, len(data)),
                        io.BytesIO(data))
            total += len(data)
            files += 1
            n += 1
    size, comp = b.finish(SUITE, ["sh"], f"synthetic tree of {files} entries")
    return "synthetic", files, size, comp


# -- the cache --------------------------------------------------------------------------------

def cached_image(cache_dir: str, name: str, kind: str) -> CachedImage:
    """Build (once) and return an image: ``name`` is "debian" or "busybox"; ``kind`` for
    debian is "auto" (debootstrap when root, else an existing debootstrap entry, else
    synthetic), "debootstrap" or "synthetic"."""
    if name == "busybox":
        kinds = ["busybox"]
    elif kind == "auto":
        kinds = ["debootstrap", "synthetic"]
    else:
        kinds = [kind]
    for k in kinds:
        entry = os.path.join(cache_dir, f"{name}-{k}-v{CACHE_VERSION}")
        info = os.path.join(entry, "info.json")
        if os.path.isfile(info):
            with open(info) as f:
                return CachedImage(**json.load(f))
    errors = []
    for k in kinds:
        try:
            return _build(cache_dir, name, k)
        except BenchError as e:
            errors.append(f"{k}: {e}")
            log(f"cannot build the {k} {name} image ({e}); trying the next kind")
    raise BenchError("; ".join(errors))


def _build(cache_dir: str, name: str, kind: str) -> CachedImage:
    os.makedirs(cache_dir, exist_ok=True)
    entry = os.path.join(cache_dir, f"{name}-{kind}-v{CACHE_VERSION}")
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir)
    try:
        layout = os.path.join(tmp, "layout")
        if kind == "busybox":
            got = build_busybox(layout)
        elif kind == "debootstrap":
            got = build_debootstrap(layout, tmp)
        elif kind == "synthetic":
            log("building a synthetic image tree (once; the result is cached)")
            got = build_synthetic(layout)
        else:
            raise BenchError(f"unknown image kind {kind!r}")
        _, files, size, comp = got
        tag = "latest" if kind == "busybox" else SUITE
        img = CachedImage(name=name, layout=os.path.join(entry, "layout"), tag=tag,
                          kind=kind, files=files, size=size, compressed=comp)
        with open(os.path.join(tmp, "info.json"), "w") as f:
            json.dump(img.__dict__, f)
        os.chmod(tmp, 0o755)
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"cached {img.describe()} in {entry}")
    return img


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, gid)


def push(img: CachedImage, dest: str, env: dict, policy: str) -> None:
    """Copy the cached layout to ``docker://dest`` over plain HTTP, blobs unchanged."""
    require_tool("skopeo")
    argv = ["skopeo", "--policy", policy, "copy", "--quiet", "--dest-tls-verify=false",
            "--preserve-digests", f"oci:{img.layout}:{img.tag}", f"docker://{dest}"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"skopeo copy to {dest} failed: {proc.stderr.strip()[-1500:]}")
