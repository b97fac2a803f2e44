"""Image archives: ``save`` (store -> tar), ``load`` (tar -> store), ``import`` (rootfs tar
-> one-layer image).

Formats written and read:

* ``docker-archive``: docker's ``save`` layout: ``manifest.json`` (``Config``,
  ``RepoTags``, ``Layers``), the config as ``<hex>.json``, each layer as
  ``<hex>/layer.tar`` (uncompressed) and ``repositories``.
* ``oci-archive``: an OCI image layout (``oci-layout``, ``index.json`` whose manifests
  carry ``org.opencontainers.image.ref.name``, ``blobs/sha256/<hex>``) in a tar.
* ``oci-dir``: the same layout as a directory.

The store keeps extracted layers, not blobs: a layer is written as an uncompressed tar
by push's ``compress_layer`` (algorithm none), once per archive however many images
share it.  Its tar may not hash to the diff id the image came with (a pulled layer is
serialised again), so the archived config then lists the new diff ids, as push does.

Loading never extracts the archive by member name: regular members are copied into temp
files of the store and looked up by name (``..`` or absolute names are refused), then
each layer goes through the layer extractor with its diff id checked, into a temp entry
committed only when complete, as pull does.  Nothing here prints.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
import time
from dataclasses import dataclass, field

from pbox.config import Config
from pbox.errors import ImageNotFound, PboxError, UnsupportedFormat, UsageError

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_JSON = 16 << 20  # manifests and configs larger than this are not plausible


class ArchiveError(UnsupportedFormat):
    """An archive pbox cannot or will not read (malformed, hostile)."""


# -- save ---------------------------------------------------------------------------------


@dataclass
class _Saved:
    config_raw: bytes
    config_digest: str
    layers: list  # (digest == diff id, size, entry path)
    names: list  # full references (registry/repo:tag)


def save(config: Config, images: list[str], out, fmt: str = "docker-archive",
         directory: str | None = None, notice=None) -> None:
    """Write ``images`` to ``out`` (a binary stream), or to ``directory`` for oci-dir."""
    from pbox import images as imgs
    from pbox.distribution import _with_diff_ids, compress_layer
    from pbox.oci import digest as dg
    from pbox.storage.images import ImageStore

    if fmt not in FORMATS:
        raise UsageError(f"unknown archive format {fmt!r} (use {', '.join(FORMATS)})")
    if not images:
        raise UsageError("save needs at least one image")
    keep_owners = imgs.enter_userns(config, notice)
    store = imgs.open_store(config, create=False)
    if not store.exists:
        raise ImageNotFound(f"No such image: {images[0]}")
    istore = ImageStore(store)
    resolved = [(text, imgs.resolve(istore, text)) for text in images]
    store.clean_temp()
    made: dict[str, object] = {}  # chain id -> _Compressed (uncompressed tar)
    saved: list[_Saved] = []
    try:
        with store.gc_lock.shared():
            for _text, res in resolved:
                layers = []
                for chain in res.record.layers:
                    if chain not in made:
                        made[chain] = compress_layer(store, chain, None, keep_owners)
                    c = made[chain]
                    layers.append((c.digest, c.size, c.entry.path))
                raw = store.read_blob(res.record.id)
                diff_ids = [d for d, _, _ in layers]
                if diff_ids != list(res.record.diff_ids):
                    raw = _with_diff_ids(raw, diff_ids)
                names = [res.ref.string()] if res.ref is not None and not res.ref.digest else []
                saved.append(_Saved(raw, dg.compute(raw), layers, names))
            if fmt == "docker-archive":
                _write_docker(out, saved)
            elif fmt == "oci-archive":
                _write_oci(_TarSink(out), saved)
            else:
                os.makedirs(directory, exist_ok=True)
                _write_oci(_DirSink(directory), saved)
    finally:
        for c in made.values():
            c.discard()


class _TarSink:
    """The archive as a tar stream on ``out``: the bytes ``tarfile`` writes in ``w|`` mode
    with the PAX format (headers from ``TarInfo.tobuf``), but a layer file goes from its
    temp file to ``out`` by ``sendfile(2)`` when ``out`` is a file or a pipe, instead of
    through Python buffers (a 120 MB layer: ~30 ms instead of ~300)."""

    def __init__(self, out):
        self.out = out
        self.dirs: set[str] = set()
        self.offset = 0
        self._fd = _fileno(out)

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def _header(self, info: tarfile.TarInfo) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))

    def _pad(self) -> None:
        rest = self.offset % tarfile.BLOCKSIZE
        if rest:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - rest))

    def _dir(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent and parent not in self.dirs:
            self._dir(parent)
            info = tarfile.TarInfo(parent + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            self._header(info)
            self.dirs.add(parent)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._dir(name)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        self._header(info)
        self._write(data)
        self._pad()

    def add_file(self, name: str, path: str, size: int) -> None:
        self._dir(name)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        self._header(info)
        with open(path, "rb") as f:
            done = self._sendfile(f, size) if self._fd is not None else 0
            f.seek(done)
            while done < size:
                chunk = f.read(min(1 << 20, size - done))
                if not chunk:
                    raise ArchiveError(f"{path} ended after {done} of {size} bytes")
                self.out.write(chunk)
                done += len(chunk)
        self.offset += size
        self._pad()

    def _sendfile(self, f, size: int) -> int:
        """Bytes of ``f`` sent straight to ``out``'s descriptor (0: not possible here,
        the caller copies)."""
        self.out.flush()
        done = 0
        while done < size:
            try:
                n = os.sendfile(self._fd, f.fileno(), done, size - done)
            except OSError:
                if done:
                    raise
                self._fd = None  # e.g. a terminal: copy this and the next files
                return 0
            if n == 0:
                break
            done += n
        return done

    def close(self) -> None:
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        rest = self.offset % tarfile.RECORDSIZE
        if rest:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - rest))
        self.out.flush()


def _fileno(out) -> int | None:
    try:
        return out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


class _DirSink:
    def __init__(self, root: str):
        self.root = root

    def _path(self, name: str) -> str:
        path = os.path.join(self.root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def add_bytes(self, name: str, data: bytes) -> None:
        with open(self._path(name), "wb") as f:
            f.write(data)

    def add_file(self, name: str, path: str, size: int) -> None:
        import shutil

        shutil.copyfile(path, self._path(name))

    def close(self) -> None:
        pass


def _write_docker(out, saved: list[_Saved]) -> None:
    sink = _TarSink(out)
    written: set[str] = set()
    manifest, repositories = [], {}
    for s in saved:
        layer_names = []
        for digest, size, path in s.layers:
            name = digest.partition(":")[2] + "/layer.tar"
            if name not in written:
                sink.add_file(name, path, size)
                written.add(name)
            layer_names.append(name)
        config_name = s.config_digest.partition(":")[2] + ".json"
        if config_name not in written:
            sink.add_bytes(config_name, s.config_raw)
            written.add(config_name)
        tags = _familiar(s.names)
        manifest.append({"Config": config_name, "RepoTags": tags or None,
                         "Layers": layer_names})
        for t in tags:
            repo, _, tag = t.rpartition(":")
            repositories.setdefault(repo, {})[tag] = layer_names[-1].split("/")[0] \
                if layer_names else ""
    sink.add_bytes("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    if repositories:
        sink.add_bytes("repositories", json.dumps(repositories).encode())
    sink.close()


def _familiar(names: list[str]) -> list[str]:
    from pbox.images import familiar_names

    return [n if ":" in n.rpartition("/")[2] else n + ":latest" for n in familiar_names(names)]


def _write_oci(sink, saved: list[_Saved]) -> None:
    from pbox.oci import digest as dg
    from pbox.oci import manifest as mf
    from pbox.oci import mediatypes as mt

    written: set[str] = set()

    def blob(digest: str, data: bytes | None = None, path: str = "", size: int = 0):
        if digest in written:
            return
        name = "blobs/sha256/" + digest.partition(":")[2]
        if data is not None:
            sink.add_bytes(name, data)
        else:
            sink.add_file(name, path, size)
        written.add(digest)

    entries = []
    for s in saved:
        for digest, size, path in s.layers:
            blob(digest, path=path, size=size)
        blob(s.config_digest, s.config_raw)
        manifest = mf.build_manifest(
            mf.Descriptor(mt.OCI_CONFIG, s.config_digest, len(s.config_raw)),
            [mf.Descriptor(mt.OCI_LAYER, d, size) for d, size, _ in s.layers],
            media_type=mt.OCI_MANIFEST)
        mdigest = dg.compute(manifest.raw)
        blob(mdigest, manifest.raw)
        desc = {"mediaType": mt.OCI_MANIFEST, "digest": mdigest, "size": len(manifest.raw)}
        names = _familiar(s.names)
        if not names:
            entries.append(desc)
        for full, short in zip(s.names, names):
            entries.append(dict(desc, annotations={REF_NAME: short, CONTAINERD_NAME: full}))
    sink.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    sink.add_bytes("index.json", json.dumps(index, separators=(",", ":")).encode())
    sink.close()


# -- load ---------------------------------------------------------------------------------


@dataclass
class LoadedImage:
    image_id: str
    names: list = field(default_factory=list)  # familiar names tagged


def _safe_name(name: str) -> str:
    """A member name normalised (``./a`` -> ``a``); ArchiveError for escapes."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise ArchiveError(f"refusing archive member {name!r}: absolute or odd name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"refusing archive member {name!r}: it points outside the archive")
    return "/".join(parts)


class _Members:
    """Regular files of an archive, by normalised name, each in a temp file of the store."""

    def __init__(self, store):
        self.store = store
        self.entries: list = []
        self.paths: dict[str, str] = {}

    @classmethod
    def from_tar(cls, store, stream) -> _Members:
        import shutil

        self = cls(store)
        try:
            tar = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115
            links: dict[str, str] = {}
            for m in tar:
                name = _safe_name(m.name)
                if m.isdir() or not name:
                    continue
                if m.issym() or m.islnk():
                    # skopeo's docker archives link <id>/layer.tar to <digest>.tar: kept
                    # as a name -> name alias, resolved inside the archive only
                    base = posixpath.dirname(name) if m.issym() else ""
                    target = m.linkname if m.islnk() else posixpath.join(base, m.linkname)
                    links[name] = _safe_name(posixpath.normpath(target)
                                             if not target.startswith("/") else target)
                    continue
                if not m.isfile():
                    raise ArchiveError(f"refusing archive member {m.name!r}: not a regular file")
                src = tar.extractfile(m)
                entry = store.temp("load")
                self.entries.append(entry)
                with open(entry.path, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                self.paths[name] = entry.path
            for name, target in links.items():
                for _ in range(8):  # a link to a link, but no loops
                    target = links.get(target, target)
                if target in self.paths:
                    self.paths.setdefault(name, self.paths[target])
        except tarfile.TarError as e:
            self.discard()
            raise ArchiveError(f"not a valid image archive: {e}")
        except BaseException:
            self.discard()
            raise
        return self

    @classmethod
    def from_dir(cls, store, root: str) -> _Members:
        self = cls(store)
        self.root = os.path.realpath(root)
        return self

    def path(self, name: str) -> str | None:
        name = _safe_name(name)
        root = getattr(self, "root", None)
        if root is None:
            return self.paths.get(name)
        path = os.path.join(root, *name.split("/"))
        real = os.path.realpath(path)
        if not real.startswith(root + os.sep):
            raise ArchiveError(f"refusing {name!r}: it points outside the layout")
        return real if os.path.isfile(real) else None

    def read(self, name: str, what: str) -> bytes:
        path = self.path(name)
        if path is None:
            raise ArchiveError(f"the archive has no {what} ({name})")
        if os.path.getsize(path) > MAX_JSON:
            raise ArchiveError(f"{what} {name} is too large")
        with open(path, "rb") as f:
            return f.read()

    def has(self, name: str) -> bool:
        return self.path(name) is not None

    def discard(self) -> None:
        for e in self.entries:
            e.discard()
        self.entries = []


def _json(data: bytes, what: str):
    try:
        return json.loads(data)
    except ValueError as e:
        raise ArchiveError(f"{what} is not valid JSON: {e}")


@dataclass
class _ToLoad:
    config_raw: bytes
    layer_files: list  # member names
    names: list  # references as written in the archive


def _plan_docker(members: _Members) -> list[_ToLoad]:
    manifest = _json(members.read("manifest.json", "manifest.json"), "manifest.json")
    if not isinstance(manifest, list):
        raise ArchiveError("manifest.json is not a list")
    out = []
    for item in manifest:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list):
            raise ArchiveError("manifest.json: an entry lacks Config or Layers")
        raw = members.read(item["Config"], "image config")
        layers = [_safe_name(str(n)) for n in item["Layers"]]
        out.append(_ToLoad(raw, layers, [str(t) for t in item.get("RepoTags") or []]))
    return out


def _blob_name(digest: str) -> str:
    from pbox.oci import digest as dg

    algo, hexpart = dg.parse(digest)
    return f"blobs/{algo}/{hexpart}"


def _read_blob(members: _Members, digest: str, what: str) -> bytes:
    from pbox.oci import digest as dg

    raw = members.read(_blob_name(digest), what)
    if dg.compute(raw) != digest:
        raise ArchiveError(f"{what} {digest}: its content does not match its digest")
    return raw


def _plan_oci(members: _Members) -> list[_ToLoad]:
    from pbox.oci import manifest as mf
    from pbox.oci import platform as plat

    index = mf.parse_index(members.read("index.json", "index.json"))
    out = []
    for desc in index.manifests:
        raw = _read_blob(members, desc.digest, "manifest")
        parsed = mf.parse(raw, desc.media_type)
        if isinstance(parsed, mf.Index):
            inner = plat.select(parsed.manifests, plat.host(), what=desc.digest)
            raw = _read_blob(members, inner.digest, "manifest")
            parsed = mf.parse_manifest(raw, inner.media_type)
        config_raw = _read_blob(members, parsed.config.digest, "image config")
        ann = desc.annotations or {}
        name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME) or ""
        names = [name] if name and (":" in name or "/" in name) else []
        out.append(_ToLoad(config_raw, [_blob_name(d.digest) for d in parsed.layers], names))
    return out


def load(config: Config, source=None, path: str | None = None, notice=None,
         report=None) -> list[LoadedImage]:
    """Load every image of an archive (a stream, or ``path``: file or oci-dir)."""
    from pbox import images as imgs
    from pbox.oci import compression
    from pbox.storage.images import ImageStore

    report = report or (lambda *a, **k: None)
    keep_owners = imgs.enter_userns(config, notice)
    store = imgs.open_store(config)
    store.clean_temp()
    istore = ImageStore(store)
    if path is not None and os.path.isdir(path):
        members = _Members.from_dir(store, path)
    else:
        stream = open(path, "rb") if path is not None else source  # noqa: SIM115
        try:
            members = _Members.from_tar(store, compression.decompress_auto(stream))
        finally:
            if path is not None:
                stream.close()
    try:
        if members.has("manifest.json"):
            plan = _plan_docker(members)
        elif members.has("index.json"):
            plan = _plan_oci(members)
        else:
            raise ArchiveError("not an image archive: no manifest.json or index.json")
        if not plan:
            raise ArchiveError("the archive holds no image")
        loaded = []
        with store.gc_lock.shared():
            for item in plan:
                loaded.append(_load_one(store, istore, members, item, keep_owners, notice,
                                        report))
        return loaded
    finally:
        members.discard()


def _load_one(store, istore, members: _Members, item: _ToLoad, keep_owners, notice,
              report) -> LoadedImage:
    from pbox.images import chain_ids
    from pbox.oci import digest as dg
    from pbox.oci import manifest as mf
    from pbox.oci import reference as refs
    from pbox.storage.images import ImageRecord

    image_config = mf.parse_config(item.config_raw)
    diff_ids = list(image_config.diff_ids)
    if len(diff_ids) != len(item.layer_files):
        raise ArchiveError(f"the manifest has {len(item.layer_files)} layers but the config "
                           f"lists {len(diff_ids)}")
    chains = chain_ids(diff_ids)
    for i, (name, diff_id, chain) in enumerate(zip(item.layer_files, diff_ids, chains)):
        if store.has_layer(chain):
            continue
        path = members.path(name)
        if path is None:
            raise ArchiveError(f"the archive has no layer {name}")
        import_layer(store, path, diff_id, chain, chains[i - 1] if i else "", keep_owners,
                     notice)
        report("layer-loaded", layer=diff_id)
    image_id = store.put_blob(item.config_raw)
    if image_id != dg.compute(item.config_raw):
        raise ArchiveError("image config digest mismatch")
    size = sum(store.layer_info(c).get("size", 0) for c in chains)
    already = istore.exists(image_id)
    istore.put(ImageRecord(id=image_id, layers=chains, diff_ids=diff_ids,
                           created=image_config.created or "", size=size,
                           added=istore.get(image_id).added if already else time.time()))
    names = []
    for n in item.names:
        try:
            ref = refs.parse(n)
        except PboxError:
            continue
        if ref.digest:
            continue
        istore.set_tag(ref.string(), image_id)
        names.append(ref.familiar())
    return LoadedImage(image_id, names)


def import_layer(store, path: str, diff_id: str, chain: str, parent: str, keep_owners,
                 notice) -> int:
    """Extract the (possibly compressed) layer tar at ``path`` into the store, checking
    its diff id; committed as layer ``chain`` only when complete.  Returns its size."""
    from pbox.oci import compression
    from pbox.oci.digest import VerifyingReader
    from pbox.storage.extract import extract_layer
    from pbox.storage.store import LAYER_SPLIT

    entry = store.new_layer()
    try:
        with open(path, "rb") as f:
            tar = VerifyingReader(compression.decompress_auto(f), diff_id,
                                  what="uncompressed layer")
            stats = extract_layer(tar, os.path.join(entry.path, "diff"),
                                  keep_owners=keep_owners, notice=notice,
                                  split_to=os.path.join(entry.path, LAYER_SPLIT))
            tar.finish()
        info = {"chain_id": chain, "diff_id": diff_id, "parent": parent,
                "size": stats.bytes_written}
        store.commit_layer(entry, chain, info)
    except BaseException:
        entry.discard()
        raise
    return stats.bytes_written


# -- import -------------------------------------------------------------------------------


def _fetch_url(url: str, dest) -> None:
    import requests

    try:
        with requests.get(url, stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise PboxError(f"{url}: HTTP {resp.status_code}")
            for chunk in resp.iter_content(1 << 20):
                dest.write(chunk)
    except requests.RequestException as e:
        raise PboxError(f"{url}: {e}")


def import_image(config: Config, source: str, repository: str | None = None, *,
                 changes: list[str] | tuple = (), message: str = "", stdin=None,
                 notice=None) -> str:
    """docker's ``import``: a rootfs tar (file, http(s) URL or ``-``) as a one-layer image."""
    import platform
    import shutil

    from pbox import humanize
    from pbox import images as imgs
    from pbox.containers.fsops import apply_changes
    from pbox.oci import compression
    from pbox.oci import reference as refs
    from pbox.storage.extract import extract_layer
    from pbox.storage.images import ImageRecord, ImageStore

    ref = None
    if repository:
        ref = refs.parse(repository)
        if ref.digest:
            raise UsageError(f"{repository}: the name of an import cannot contain a digest")
    new_config = apply_changes({}, list(changes))
    is_url = source.startswith(("http://", "https://"))
    if not is_url and "://" in source:
        raise UsageError(f"{source}: only http and https URLs can be imported")
    if not is_url and source != "-" and not os.path.isfile(source):
        raise UsageError(f"{source}: " + ("is a directory (import takes a tar archive)"
                                          if os.path.isdir(source) else "no such file"))
    keep_owners = imgs.enter_userns(config, notice)
    store = imgs.open_store(config)
    store.clean_temp()
    istore = ImageStore(store)
    with store.gc_lock.shared():
        raw_entry = store.temp("import")
        layer = store.new_layer()
        try:
            with open(raw_entry.path, "wb") as f:
                if is_url:
                    _fetch_url(source, f)
                elif source == "-":
                    shutil.copyfileobj(stdin, f, 1 << 20)
                else:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, f, 1 << 20)
                if not f.tell():
                    # (a script that forgot the pipe would get an image of nothing)
                    raise UsageError(f"{source}: not a tar archive: empty file")
            with open(raw_entry.path, "rb") as f:
                tar = compression.decompress_auto(f)
                stats = extract_layer(tar, os.path.join(layer.path, "diff"),
                                      keep_owners=keep_owners, notice=notice)
                while tar.read(1 << 20):
                    pass
            raw_entry.discard()
            # the diff id of what a save or push writes from this layer
            from pbox.storage.layertar import write_layer_tar

            sink = _Sha256()
            write_layer_tar(os.path.join(layer.path, "diff"), sink,
                            owners="keep" if keep_owners else (0, 0))
            diff_id = "sha256:" + sink.h.hexdigest()
            if store.has_layer(diff_id):
                layer.discard()
            else:
                store.commit_layer(layer, diff_id, {"chain_id": diff_id, "diff_id": diff_id,
                                                    "parent": "", "size": stats.bytes_written})
        except BaseException:
            raw_entry.discard()
            layer.discard()
            raise
        now = humanize.rfc3339(time.time())
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                          platform.machine())
        entry = {"created": now, "created_by": "pbox import " + source}
        if message:
            entry["comment"] = message
        image = {"architecture": arch, "os": "linux", "created": now, "config": new_config,
                 "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [entry]}
        if message:
            image["comment"] = message
        raw = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
        image_id = store.put_blob(raw)
        istore.put(ImageRecord(id=image_id, layers=[diff_id], diff_ids=[diff_id], created=now,
                               size=store.layer_info(diff_id).get("size", 0),
                               added=time.time()))
        if ref is not None:
            istore.set_tag(ref.string(), image_id)
    return image_id


class _Sha256:
    def __init__(self):
        import hashlib

        self.h = hashlib.sha256()

    def write(self, b) -> int:
        self.h.update(b)
        return len(b)

    def flush(self) -> None:
        pass
