"""Build small OCI / docker images from the host's static busybox and push them.

Pure Python: ``tarfile`` makes the layers (deterministic: fixed mtimes, numeric
owners), ``gzip`` / ``zstandard`` compress them, and ``RegistryClient`` pushes
with plain HTTP (HEAD, monolithic POST + PUT upload, manifest PUT), answering the
basic and bearer challenges of the harness registries itself so fixtures never
depend on pbox's own client.

Every pushed image comes back as a ``PushedImage`` (or ``PushedIndex``) telling
what a correct puller must end up with: digests, diff IDs, platform, and the
flattened file tree (``files``), the paths later layers removed (``absent``) and
the marker files' contents (``markers``).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import os
import platform as _platform
import posixpath
import shutil
import struct
import subprocess
import tarfile
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin

# -- media types ------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = {
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "none": "application/vnd.docker.image.rootfs.diff.tar",
}
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)

CREATED = "2024-01-02T03:04:05Z"
MTIME = 1704164645  # CREATED as a timestamp: every tar entry gets it
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/usr/bin/busybox"
SMALL = 64 * 1024  # ExpectedFile keeps the bytes of files up to this size

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nuser:x:1000:\n"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
           "i686": "386", "i386": "386"}


def host_arch() -> str:
    """The host's architecture in GOARCH spelling (what image platforms use)."""
    machine = _platform.machine()
    return _GOARCH.get(machine, machine)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- layers ----------------------------------------------------------------------------------

@dataclass
class Entry:
    """One member of a layer tar.  ``path`` is absolute ("/bin/sh")."""

    path: str
    kind: str  # file, dir, symlink, hardlink, whiteout, opaque
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""  # symlink target as written; hardlink target as an absolute path


@dataclass
class ExpectedFile:
    """What a path must look like in the flattened image."""

    kind: str  # file, dir, symlink
    mode: int  # permission bits including setuid/setgid/sticky, without the type
    uid: int
    gid: int
    size: int = 0
    sha256: str = ""  # hex, for files
    data: bytes | None = None  # the content, for files up to SMALL bytes
    target: str = ""  # symlink target
    hardlink_of: str | None = None  # the path this one is a hardlink to, in its layer


def _norm(path: str) -> str:
    path = posixpath.normpath("/" + path.lstrip("/"))
    if path == "/":
        raise ValueError("a layer entry cannot be the root directory itself")
    return path


class LayerSpec:
    """What one layer adds, changes and removes.  Methods chain."""

    def __init__(self, created_by: str = ""):
        self.created_by = created_by
        self.entries: list[Entry] = []

    def _add(self, entry: Entry) -> LayerSpec:
        self.entries.append(entry)
        return self

    def file(self, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0,
             gid: int = 0) -> LayerSpec:
        if isinstance(data, str):
            data = data.encode()
        return self._add(Entry(_norm(path), "file", mode, uid, gid, data))

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> LayerSpec:
        return self._add(Entry(_norm(path), "dir", mode, uid, gid))

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> LayerSpec:
        return self._add(Entry(_norm(path), "symlink", 0o777, uid, gid, target=target))

    def hardlink(self, path: str, target: str) -> LayerSpec:
        """A hardlink to ``target``, which must be a file added earlier in this layer."""
        target = _norm(target)
        if not any(e.path == target and e.kind == "file" for e in self.entries):
            raise ValueError(f"hardlink target {target} must be a file of the same layer")
        return self._add(Entry(_norm(path), "hardlink", target=target))

    def whiteout(self, path: str) -> LayerSpec:
        """Delete ``path`` (and what is below it) of the lower layers: ``.wh.<name>``."""
        return self._add(Entry(_norm(path), "whiteout"))

    def opaque(self, path: str) -> LayerSpec:
        """Hide everything the lower layers have below directory ``path``: ``.wh..wh..opq``."""
        return self._add(Entry(_norm(path), "opaque"))

    def tar(self, lower: dict[str, ExpectedFile] | None = None) -> bytes:
        """The layer as an uncompressed tar.

        Parent directories the layer does not list are written too (as docker
        does), with the owner and mode they have in ``lower`` when they exist there.
        """
        lower = lower or {}
        buf = io.BytesIO()
        written: set[str] = set()
        explicit_dirs = {e.path for e in self.entries if e.kind == "dir"}
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:

            def add_parents(path: str) -> None:
                parent = posixpath.dirname(path)
                missing = []
                while parent != "/" and parent not in written:
                    missing.append(parent)
                    parent = posixpath.dirname(parent)
                for d in reversed(missing):
                    if d in explicit_dirs:
                        spec = next(e for e in self.entries if e.path == d and e.kind == "dir")
                        mode, uid, gid = spec.mode, spec.uid, spec.gid
                    elif d in lower and lower[d].kind == "dir":
                        mode, uid, gid = lower[d].mode, lower[d].uid, lower[d].gid
                    else:
                        mode, uid, gid = 0o755, 0, 0
                    ti = self._info(d, tarfile.DIRTYPE, mode, uid, gid)
                    tf.addfile(ti)
                    written.add(d)

            for e in self.entries:
                add_parents(e.path)
                if e.kind == "whiteout":
                    name = posixpath.join(posixpath.dirname(e.path), ".wh." + posixpath.basename(e.path))
                    tf.addfile(self._info(name, tarfile.REGTYPE, 0o644, 0, 0), io.BytesIO(b""))
                elif e.kind == "opaque":
                    if e.path not in written:
                        add_parents(e.path + "/x")
                    name = posixpath.join(e.path, ".wh..wh..opq")
                    tf.addfile(self._info(name, tarfile.REGTYPE, 0o644, 0, 0), io.BytesIO(b""))
                elif e.kind == "dir":
                    if e.path in written:
                        continue
                    tf.addfile(self._info(e.path, tarfile.DIRTYPE, e.mode, e.uid, e.gid))
                    written.add(e.path)
                elif e.kind == "file":
                    ti = self._info(e.path, tarfile.REGTYPE, e.mode, e.uid, e.gid)
                    ti.size = len(e.data)
                    tf.addfile(ti, io.BytesIO(e.data))
                elif e.kind == "symlink":
                    ti = self._info(e.path, tarfile.SYMTYPE, 0o777, e.uid, e.gid)
                    ti.linkname = e.target
                    tf.addfile(ti)
                elif e.kind == "hardlink":
                    src = next(x for x in self.entries if x.path == e.target and x.kind == "file")
                    ti = self._info(e.path, tarfile.LNKTYPE, src.mode, src.uid, src.gid)
                    ti.linkname = e.target.lstrip("/")
                    tf.addfile(ti)
                else:
                    raise ValueError(f"unknown entry kind {e.kind!r}")
        return buf.getvalue()

    @staticmethod
    def _info(path: str, type_: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
        name = path.lstrip("/")
        ti = tarfile.TarInfo(name + "/" if type_ == tarfile.DIRTYPE else name)
        ti.type = type_
        ti.mode = mode & 0o7777
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = MTIME
        return ti

    def apply(self, state: dict[str, ExpectedFile], removed: set[str]) -> None:
        """Apply this layer to a flattened view, as an extractor must (OCI image-spec layer rules)."""

        def drop_below(path: str, include_self: bool) -> None:
            prefix = path + "/"
            for p in [p for p in state if p.startswith(prefix) or (include_self and p == path)]:
                del state[p]
                removed.add(p)

        # whiteouts act on the lower layers only, whatever their place in the tar
        for e in self.entries:
            if e.kind == "whiteout":
                drop_below(e.path, include_self=True)
            elif e.kind == "opaque":
                drop_below(e.path, include_self=False)
        for e in self.entries:
            if e.kind in ("whiteout", "opaque"):
                continue
            old = state.get(e.path)
            if old is not None and old.kind == "dir" and e.kind != "dir":
                drop_below(e.path, include_self=False)
            if e.kind == "dir":
                state[e.path] = ExpectedFile("dir", e.mode & 0o7777, e.uid, e.gid)
            elif e.kind == "file":
                state[e.path] = _expected_file(e.data, e.mode, e.uid, e.gid)
            elif e.kind == "symlink":
                state[e.path] = ExpectedFile("symlink", 0o777, e.uid, e.gid,
                                             size=len(e.target), target=e.target)
            elif e.kind == "hardlink":
                src = state[e.target]
                state[e.path] = ExpectedFile(src.kind, src.mode, src.uid, src.gid, src.size,
                                             src.sha256, src.data, hardlink_of=e.target)
            removed.discard(e.path)
            # implicit parents that did not exist yet
            parent = posixpath.dirname(e.path)
            while parent != "/" and parent not in state:
                state[parent] = ExpectedFile("dir", 0o755, 0, 0)
                removed.discard(parent)
                parent = posixpath.dirname(parent)


def _expected_file(data: bytes, mode: int, uid: int, gid: int) -> ExpectedFile:
    return ExpectedFile("file", mode & 0o7777, uid, gid, size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        data=data if len(data) <= SMALL else None)


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        # level 1 keeps big random layers quick; mtime=0 keeps blobs reproducible
        return gzip.compress(data, compresslevel=1 if len(data) > (8 << 20) else 6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


def decompress(data: bytes, media_type: str) -> bytes:
    """A layer blob back to its tar, by media type."""
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


@dataclass
class BuiltLayer:
    media_type: str
    compression: str
    blob: bytes
    digest: str
    diff_id: str
    created_by: str

    @property
    def size(self) -> int:
        return len(self.blob)

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class BuiltImage:
    """An image manifest, its config and layers, ready to push."""

    manifest: bytes
    manifest_media_type: str
    config: bytes
    config_media_type: str
    layers: list[BuiltLayer]
    platform: str  # "linux/amd64", "linux/arm64/v8"
    files: dict[str, ExpectedFile]
    absent: set[str]
    markers: dict[str, str]

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


@dataclass
class BuiltIndex:
    manifest: bytes
    media_type: str
    children: list[BuiltImage]

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)


def build_image(layers: list[LayerSpec], *, arch: str | None = None, os_name: str = "linux",
                variant: str | None = None, compression: str | list[str] = "gzip",
                docker: bool = False, cmd: list[str] | None = None, env: list[str] | None = None,
                labels: dict[str, str] | None = None, user: str | None = None,
                workdir: str | None = None, markers: tuple[str, ...] = ("/arch",)) -> BuiltImage:
    """Build an image from layer specs.

    ``compression`` is one of gzip/zstd/none or a list with one per layer;
    ``docker=True`` gives docker schema 2 media types (which have no zstd).
    ``markers`` are paths whose final text content is reported in ``markers``.
    """
    arch = arch or host_arch()
    if isinstance(compression, str):
        compression = [compression] * len(layers)
    if len(compression) != len(layers):
        raise ValueError("one compression per layer")
    layer_types = DOCKER_LAYER if docker else OCI_LAYER
    state: dict[str, ExpectedFile] = {}
    removed: set[str] = set()
    built: list[BuiltLayer] = []
    for spec, comp in zip(layers, compression):
        if comp not in layer_types:
            raise ValueError(f"no {'docker' if docker else 'OCI'} layer media type for {comp!r}")
        tar = spec.tar(state)
        spec.apply(state, removed)
        blob = compress(tar, comp)
        built.append(BuiltLayer(layer_types[comp], comp, blob, sha256_digest(blob),
                                sha256_digest(tar), spec.created_by))
        del tar
    container_config: dict = {"Env": list(env or [PATH_ENV]), "Cmd": list(cmd or ["sh"])}
    if labels:
        container_config["Labels"] = dict(labels)
    if user:
        container_config["User"] = user
    if workdir:
        container_config["WorkingDir"] = workdir
    history = []
    for layer in built:
        created_by = layer.created_by or (
            f"/bin/sh -c #(nop) ADD file:{layer.diff_id.split(':')[1]} in / ")
        history.append({"created": CREATED, "created_by": created_by})
    history.append({"created": CREATED,
                    "created_by": "/bin/sh -c #(nop)  CMD " + json.dumps(container_config["Cmd"]),
                    "empty_layer": True})
    config: dict = {"architecture": arch, "os": os_name}
    if variant:
        config["variant"] = variant
    config.update({
        "created": CREATED,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in built]},
        "history": history,
    })
    config_bytes = canonical_json(config)
    config_type = DOCKER_CONFIG if docker else OCI_CONFIG
    manifest_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": sha256_digest(config_bytes),
                   "size": len(config_bytes)},
        "layers": [layer.descriptor() for layer in built],
    }
    plat = f"{os_name}/{arch}" + (f"/{variant}" if variant else "")
    found = {}
    for m in markers:
        f = state.get(m)
        if f is not None and f.kind == "file" and f.data is not None:
            found[m] = f.data.decode()
    absent = {p for p in removed if p not in state}
    return BuiltImage(canonical_json(manifest), manifest_type, config_bytes, config_type, built,
                      plat, state, absent, found)


def with_diff_ids(image: BuiltImage, diff_ids: list[str]) -> BuiltImage:
    """``image`` with a config that names ``diff_ids`` (a lie about its layers' tars),
    and a manifest pointing at that config."""
    import dataclasses

    config = json.loads(image.config)
    config["rootfs"]["diff_ids"] = list(diff_ids)
    config_bytes = canonical_json(config)
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=sha256_digest(config_bytes), size=len(config_bytes))
    return dataclasses.replace(image, config=config_bytes, manifest=canonical_json(manifest))


def build_index(children: list[BuiltImage], *, docker: bool = False) -> BuiltIndex:
    media_type = DOCKER_LIST if docker else OCI_INDEX
    manifests = []
    for child in children:
        os_name, arch, *rest = child.platform.split("/")
        plat: dict = {"architecture": arch, "os": os_name}
        if rest:
            plat["variant"] = rest[0]
        manifests.append({"mediaType": child.manifest_media_type,
                          "digest": child.manifest_digest,
                          "size": len(child.manifest), "platform": plat})
    index = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    return BuiltIndex(canonical_json(index), media_type, children)


# -- busybox ---------------------------------------------------------------------------------

def is_static_elf(data: bytes) -> bool:
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    if data[:4] != b"\x7fELF":
        return False
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # ELFCLASS64
        phoff = struct.unpack_from(end + "Q", data, 0x20)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        phoff = struct.unpack_from(end + "I", data, 0x1C)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
    for i in range(phnum):
        if struct.unpack_from(end + "I", data, phoff + i * phentsize)[0] == 3:  # PT_INTERP
            return False
    return True


@functools.lru_cache(maxsize=1)
def _busybox() -> tuple[bytes, tuple[str, ...]]:
    path = BUSYBOX if os.path.exists(BUSYBOX) else shutil.which("busybox")
    if not path:
        raise RuntimeError("the test images need a static busybox binary on PATH")
    with open(path, "rb") as f:
        data = f.read()
    if not is_static_elf(data):
        raise RuntimeError(f"{path} is dynamically linked; the test images need a static busybox")
    listing = subprocess.run([path, "--list"], check=True, capture_output=True, text=True).stdout
    applets = tuple(sorted({a for a in listing.split() if a and "/" not in a and a != "busybox"}))
    return data, applets


def busybox_layer(arch: str | None = None) -> LayerSpec:
    """A busybox rootfs: /bin/busybox and its applet symlinks, /etc/passwd and /etc/group
    (root, nobody, user 1000), the usual top-level directories, and ``/arch``
    (the architecture, newline-terminated) when ``arch`` is given."""
    data, applets = _busybox()
    layer = LayerSpec()
    for d, mode in (("/bin", 0o755), ("/dev", 0o755), ("/etc", 0o755), ("/home", 0o755),
                    ("/proc", 0o555), ("/root", 0o700), ("/sys", 0o555), ("/tmp", 0o1777),
                    ("/usr", 0o755), ("/usr/bin", 0o755), ("/usr/sbin", 0o755),
                    ("/var", 0o755), ("/var/spool", 0o755), ("/var/www", 0o755)):
        layer.dir(d, mode)
    layer.dir("/home/user", 0o755, uid=1000, gid=1000)
    layer.file("/bin/busybox", data, 0o755)
    for applet in applets:
        layer.symlink(f"/bin/{applet}", "busybox")
    layer.file("/etc/passwd", PASSWD)
    layer.file("/etc/group", GROUP)
    if arch:
        layer.file("/arch", arch + "\n")
    return layer


def write_busybox_rootfs(dest: str) -> str:
    """Write the busybox rootfs (the base layer, without /arch) as a directory tree.

    Files keep the current user as owner: the uids of the layer are not applied.
    """
    os.makedirs(dest, exist_ok=True)
    for e in busybox_layer().entries:
        path = os.path.join(dest, e.path.lstrip("/"))
        if e.kind == "dir":
            os.makedirs(path, exist_ok=True)
            os.chmod(path, e.mode)
        elif e.kind == "file":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(e.data)
            os.chmod(path, e.mode)
        elif e.kind == "symlink":
            os.symlink(e.target, path)
    return dest


def layered_specs(arch: str | None = None) -> list[LayerSpec]:
    """Five layers exercising what an extractor must get right:

    1. busybox; /data/{removed,kept,overwritten}.txt; /opaque/lower1.txt, /opaque/sub/lower2.txt
    2. owners (uid 1000 and 0), a setuid and a setgid file, a setgid dir, symlinks
       (relative and absolute) and a hardlink (/hl/link -> /hl/original)
    3. a whiteout of /data/removed.txt and an opaque /opaque with /opaque/upper.txt
    4. /data/overwritten.txt replaced, /layer4.txt
    5. an executable script /usr/local/bin/hello
    """
    arch = arch or host_arch()
    base = busybox_layer(arch)
    base.file("/data/removed.txt", "removed in layer 3\n")
    base.file("/data/kept.txt", "kept\n")
    base.file("/data/overwritten.txt", "v1\n")
    base.file("/opaque/lower1.txt", "hidden by the opaque dir\n")
    base.file("/opaque/sub/lower2.txt", "hidden by the opaque dir\n")
    owners = (LayerSpec("/bin/sh -c #(nop) COPY owners, modes and links")
              .dir("/owned", 0o755)
              .file("/owned/by1000.txt", "owned by 1000\n", 0o640, uid=1000, gid=1000)
              .file("/owned/byroot.txt", "owned by root\n", 0o600, uid=0, gid=0)
              .dir("/owned/dir1000", 0o750, uid=1000, gid=1000)
              .file("/owned/dir1000/inner.txt", "inner\n", 0o644, uid=1000, gid=1000)
              .file("/usr/local/bin/suid", "#!/bin/sh\nid -u\n", 0o4755)
              .file("/usr/local/bin/sgid", "#!/bin/sh\nid -g\n", 0o2755, gid=1000)
              .dir("/srv/shared", 0o2775, uid=0, gid=1000)
              .symlink("/link-to-kept", "data/kept.txt")
              .symlink("/abs-link-to-kept", "/data/kept.txt")
              .file("/hl/original", "hardlinked\n", 0o644)
              .hardlink("/hl/link", "/hl/original"))
    removals = (LayerSpec("/bin/sh -c rm /data/removed.txt && rm -rf /opaque && mkdir /opaque")
                .whiteout("/data/removed.txt")
                .opaque("/opaque")
                .file("/opaque/upper.txt", "upper\n"))
    overwrite = (LayerSpec("/bin/sh -c echo v2 > /data/overwritten.txt && touch /layer4.txt")
                 .file("/data/overwritten.txt", "v2\n")
                 .file("/layer4.txt", "layer 4\n"))
    script = (LayerSpec("/bin/sh -c #(nop) COPY hello /usr/local/bin/hello")
              .file("/usr/local/bin/hello", "#!/bin/sh\necho hello from layer 5\n", 0o755))
    return [base, owners, removals, overwrite, script]


# -- pushing ---------------------------------------------------------------------------------

class RegistryError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lstrip(",").strip()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            params[key.lower()] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key.lower()] = rest[i:end].strip()
            i = end
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return scheme.lower(), params


@dataclass
class PushedImage:
    """An image manifest in a registry, and what pulling it must give."""

    host: str
    repository: str
    tag: str | None
    manifest_digest: str
    manifest_media_type: str
    manifest: bytes
    config_digest: str
    config: dict
    diff_ids: list[str]
    layers: list[dict]  # descriptors: mediaType, digest, size
    platform: str
    files: dict[str, ExpectedFile] = field(repr=False, default_factory=dict)
    absent: set[str] = field(repr=False, default_factory=set)
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """``host/repo:tag`` (``host/repo@digest`` for an untagged index child)."""
        if self.tag is None:
            return self.by_digest
        return f"{self.host}/{self.repository}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repository}@{self.manifest_digest}"

    @property
    def image_id(self) -> str:
        """docker's image ID: the config digest."""
        return self.config_digest

    @property
    def layer_digests(self) -> list[str]:
        return [d["digest"] for d in self.layers]


@dataclass
class PushedIndex:
    """A multi-platform index (or docker manifest list) in a registry."""

    host: str
    repository: str
    tag: str | None
    manifest_digest: str
    media_type: str
    manifest: bytes
    children: dict[str, PushedImage]  # by platform, "linux/arm64/v8"

    @property
    def reference(self) -> str:
        if self.tag is None:
            return self.by_digest
        return f"{self.host}/{self.repository}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repository}@{self.manifest_digest}"

    @property
    def platforms(self) -> list[str]:
        return list(self.children)

    def for_arch(self, arch: str) -> PushedImage:
        for plat, child in self.children.items():
            if plat.split("/")[1] == arch:
                return child
        raise KeyError(f"no {arch} image in {self.reference}")

    @property
    def native(self) -> PushedImage:
        """The child a puller on this host must pick."""
        return self.for_arch(host_arch())


class RegistryClient:
    """Just enough of the distribution API to seed and inspect test registries.

    Built from a harness ``Registry`` (URL, CA, first user) or from explicit
    ``url``/``username``/``password``/``verify``.
    """

    def __init__(self, registry=None, *, url: str | None = None, username: str | None = None,
                 password: str | None = None, verify: str | bool | None = None):
        import requests

        if registry is not None:
            url = url or registry.url
            if username is None and password is None:
                username, password = registry.username, registry.password
            verify = registry.verify if verify is None else verify
        if not url:
            raise ValueError("RegistryClient needs a registry or a url")
        self.url = url.rstrip("/")
        self.host = self.url.split("://", 1)[1]
        self.username = username
        self.password = password
        self.session = requests.Session()
        # loopback only: no proxies or netrc from the environment, and REQUESTS_CA_BUNDLE
        # must not override the registry's own CA
        self.session.trust_env = False
        self.verify = True if verify is None else verify
        self._auth: dict[str, str] = {}  # scope -> Authorization header
        self.token_requests = 0

    # -- transport -------------------------------------------------------------------------

    def _authorize(self, challenge: str, scope: str) -> str | None:
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if self.username is None:
                return None
            raw = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if scheme == "bearer":
            query = {"service": params.get("service", "")}
            if scope:
                query["scope"] = scope
            auth = (self.username, self.password) if self.username is not None else None
            self.token_requests += 1
            resp = self.session.get(params["realm"] + "?" + urlencode(query), auth=auth,
                                    timeout=30, verify=self.verify)
            if resp.status_code != 200:
                raise RegistryError(f"token request failed: {resp.status_code} {resp.text}",
                                    resp.status_code)
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            return "Bearer " + token
        return None

    def request(self, method: str, path_or_url: str, *, scope: str = "", ok=(200,),
                **kwargs):
        """One request, answering an auth challenge once; raise RegistryError unless ``ok``."""
        url = path_or_url if "://" in path_or_url else self.url + path_or_url
        headers = dict(kwargs.pop("headers", {}) or {})
        if scope in self._auth:
            headers["Authorization"] = self._auth[scope]
        kwargs.setdefault("verify", self.verify)
        resp = self.session.request(method, url, headers=headers, timeout=120, **kwargs)
        if resp.status_code == 401 and "WWW-Authenticate" in resp.headers:
            authz = self._authorize(resp.headers["WWW-Authenticate"], scope)
            if authz:
                self._auth[scope] = authz
                headers["Authorization"] = authz
                resp = self.session.request(method, url, headers=headers, timeout=120, **kwargs)
        if resp.status_code not in ok:
            raise RegistryError(f"{method} {url}: {resp.status_code} {resp.text[:500]}",
                                resp.status_code)
        return resp

    @staticmethod
    def _pull(repo: str) -> str:
        return f"repository:{repo}:pull"

    @staticmethod
    def _push(repo: str) -> str:
        return f"repository:{repo}:pull,push"

    # -- the API ---------------------------------------------------------------------------

    def ping(self) -> int:
        return self.request("GET", "/v2/", ok=(200, 401)).status_code

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=self._pull(repo),
                            ok=(200, 404))
        return resp.status_code == 200

    def push_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        """Upload a blob monolithically (POST, then PUT with the digest) unless present."""
        digest = digest or sha256_digest(data)
        if self.blob_exists(repo, digest):
            return digest
        scope = self._push(repo)
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        location = urljoin(self.url + "/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        self.request("PUT", location + sep + urlencode({"digest": digest}), scope=scope,
                     ok=(201,), data=data,
                     headers={"Content-Type": "application/octet-stream",
                              "Content-Length": str(len(data))})
        return digest

    def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scope=self._push(repo),
                            ok=(201,), data=data, headers={"Content-Type": media_type})
        digest = resp.headers.get("Docker-Content-Digest") or sha256_digest(data)
        if digest != sha256_digest(data):
            raise RegistryError(f"registry stored manifest as {digest}, not {sha256_digest(data)}")
        return digest

    def get_manifest(self, repo: str, reference: str,
                     accept: tuple[str, ...] = MANIFEST_TYPES) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scope=self._pull(repo),
                            headers={"Accept": ", ".join(accept)})
        data = resp.content
        return data, resp.headers.get("Content-Type", ""), sha256_digest(data)

    def manifest_exists(self, repo: str, reference: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", scope=self._pull(repo),
                            ok=(200, 404), headers={"Accept": ", ".join(MANIFEST_TYPES)})
        return resp.status_code == 200

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=self._pull(repo)).content

    def tags(self, repo: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repo}/tags/list", scope=self._pull(repo),
                            ok=(200, 404))
        if resp.status_code == 404:
            return []
        return resp.json().get("tags") or []

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repo}/manifests/{digest}",
                     scope=f"repository:{repo}:delete", ok=(202,))

    def push_image(self, repo: str, tag: str | None, image: BuiltImage) -> PushedImage:
        """Push layers, config and manifest; tag it unless ``tag`` is None (push by digest)."""
        for layer in image.layers:
            self.push_blob(repo, layer.blob, layer.digest)
        self.push_blob(repo, image.config, image.config_digest)
        digest = self.push_manifest(repo, tag or image.manifest_digest, image.manifest,
                                    image.manifest_media_type)
        manifest = json.loads(image.manifest)
        return PushedImage(
            host=self.host, repository=repo, tag=tag, manifest_digest=digest,
            manifest_media_type=image.manifest_media_type, manifest=image.manifest,
            config_digest=image.config_digest, config=json.loads(image.config),
            diff_ids=image.diff_ids, layers=manifest["layers"], platform=image.platform,
            files=image.files, absent=image.absent, markers=image.markers)

    def push_index(self, repo: str, tag: str | None, index: BuiltIndex) -> PushedIndex:
        children = {}
        for child in index.children:
            children[child.platform] = self.push_image(repo, None, child)
        digest = self.push_manifest(repo, tag or index.manifest_digest, index.manifest,
                                    index.media_type)
        return PushedIndex(self.host, repo, tag, digest, index.media_type, index.manifest,
                           children)


# -- the standard set ------------------------------------------------------------------------

REPO_PREFIX = "pbox-test"


@dataclass
class StandardImages:
    """The images every registry fixture gets (all under ``pbox-test/``):

    ``busybox``       busybox:latest, one gzip layer, OCI media types
    ``busybox_docker`` busybox:docker, the same layer, docker schema 2 media types
    ``layers``        layers:latest, five layers (whiteout, opaque dir, owners, setuid,
                      symlinks, hardlink), OCI
    ``multi``         multi:latest, OCI index of linux/amd64 and linux/arm64/v8;
                      ``/arch`` holds the architecture in each
    ``multi_docker``  multi:docker, the same as a docker manifest list
    ``zstd``          zstd:latest, one zstd layer
    ``uncompressed``  uncompressed:latest, one uncompressed layer
    """

    busybox: PushedImage
    busybox_docker: PushedImage
    layers: PushedImage
    multi: PushedIndex
    multi_docker: PushedIndex
    zstd: PushedImage
    uncompressed: PushedImage

    def all(self) -> dict[str, PushedImage | PushedIndex]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _label(name: str) -> dict[str, str]:
    # a label per image keeps config digests (image IDs) distinct while layers are shared
    return {"org.opencontainers.image.title": name}


@functools.lru_cache(maxsize=1)
def standard_builds() -> dict[str, BuiltImage | BuiltIndex]:
    """The standard set, built once per process (builds are deterministic)."""
    arch = host_arch()
    other = [("amd64", None), ("arm64", "v8")]

    def platform_image(a: str, v: str | None, docker: bool, name: str) -> BuiltImage:
        return build_image([busybox_layer(a)], arch=a, variant=v, docker=docker,
                           labels=_label(name))

    return {
        "busybox": build_image([busybox_layer(arch)], labels=_label("busybox")),
        "busybox_docker": build_image([busybox_layer(arch)], docker=True,
                                      labels=_label("busybox-docker")),
        "layers": build_image(layered_specs(arch), labels=_label("layers")),
        "multi": build_index([platform_image(a, v, False, "multi") for a, v in other]),
        "multi_docker": build_index([platform_image(a, v, True, "multi-docker")
                                     for a, v in other], docker=True),
        "zstd": build_image([busybox_layer(arch)], compression="zstd", labels=_label("zstd")),
        "uncompressed": build_image([busybox_layer(arch)], compression="none",
                                    labels=_label("uncompressed")),
    }


_STANDARD_REFS = {
    "busybox": ("busybox", "latest"),
    "busybox_docker": ("busybox", "docker"),
    "layers": ("layers", "latest"),
    "multi": ("multi", "latest"),
    "multi_docker": ("multi", "docker"),
    "zstd": ("zstd", "latest"),
    "uncompressed": ("uncompressed", "latest"),
}


def push_standard_images(registry, client: RegistryClient | None = None) -> StandardImages:
    """Push the standard set into ``registry`` (a harness Registry) and describe it."""
    client = client or RegistryClient(registry)
    pushed = {}
    for name, built in standard_builds().items():
        repo, tag = _STANDARD_REFS[name]
        repo = f"{REPO_PREFIX}/{repo}"
        if isinstance(built, BuiltIndex):
            pushed[name] = client.push_index(repo, tag, built)
        else:
            pushed[name] = client.push_image(repo, tag, built)
    return StandardImages(**pushed)


def standard_images(registry) -> StandardImages:
    """``push_standard_images`` once per registry object (memoised in ``registry.cache``)."""
    cached = registry.cache.get("standard_images")
    if cached is None:
        cached = registry.cache["standard_images"] = push_standard_images(registry)
    return cached


def build_big_image(size_mb: float, *, compression: str = "gzip", seed: bytes | None = None,
                    docker: bool = False) -> BuiltImage:
    """busybox plus a layer holding ``/big.bin``: ``size_mb`` MiB of incompressible data."""
    size = int(size_mb * 1024 * 1024)
    if seed is None:
        data = os.urandom(size)
    else:  # reproducible "random" bytes
        out = bytearray()
        counter = 0
        while len(out) < size:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        data = bytes(out[:size])
    big = LayerSpec(f"/bin/sh -c head -c {size} /dev/urandom > /big.bin").file("/big.bin", data)
    return build_image([busybox_layer(), big], compression=compression, docker=docker,
                       labels=_label("big"), markers=())


def push_big_image(registry, size_mb: float, *, repo: str = f"{REPO_PREFIX}/big",
                   tag: str = "latest", compression: str = "gzip",
                   seed: bytes | None = None) -> PushedImage:
    """Build and push a big-layer image (for interrupted / resumed pull tests)."""
    client = RegistryClient(registry)
    return client.push_image(repo, tag, build_big_image(size_mb, compression=compression,
                                                        seed=seed))
