"""`RUN --mount=...`: what a RUN step sees besides the image, and never keeps.

BuildKit's mount types, as `run` mounts (``-v`` binds and ``--tmpfs``) of the step's
container:

- ``type=bind`` (the default): ``source`` (default the root) of the build context, or
  of ``from=<stage|image>``, at ``target``; read-only unless ``rw``, and writes to an
  ``rw`` bind are thrown away.  A context directory without ``.dockerignore`` rules is
  bound directly; otherwise (and for stages and images, for ``rw``, for a link) the
  source is copied into a temporary directory first, so ignored files and files
  outside the context never show.
- ``type=cache``: a directory of the store (``build-mounts/<sha256 of id>``, ``id``
  defaulting to the target) that persists across builds and is not part of any
  layer; ``uid``/``gid``/``mode`` set it up when it is created, ``from``/``source``
  seed it then.  ``sharing=shared`` (default) lets steps use it at once, ``locked``
  waits for the other users, ``private`` takes a fresh empty directory when it is busy.
- ``type=secret``: ``build --secret id=ID,src=PATH`` (or ``env=VAR``) as a read-only
  file at ``target`` (default ``/run/secrets/ID``, mode 0400), or as the environment
  variable ``env=NAME`` of the step; missing and ``required`` is an error, missing
  otherwise skips the mount.  The content is never in a layer, the history or the
  cache key.
- ``type=tmpfs``: an empty tmpfs (``size``).

The mount points the runtime creates for them (and parent directories the image
lacked) are removed from the layer while empty: ``stubs`` go to ``fsops.add_layer``.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os
import posixpath
import stat

from pbox.errors import BuildError

MOUNTS_DIR = "build-mounts"
_TYPES = ("bind", "cache", "secret", "tmpfs", "ssh")
_BOOL = {"true": True, "1": True, "false": False, "0": False}


class RunMount:
    def __init__(self, fields: dict, text: str):
        self.text = text
        self.type = fields.pop("type", "bind")
        if self.type not in _TYPES:
            raise BuildError(f"--mount: unsupported mount type {self.type!r}")
        if self.type == "ssh":
            raise BuildError("--mount=type=ssh is not supported")
        self.target = fields.pop("target", "")
        self.source = fields.pop("source", "")
        self.from_ = fields.pop("from", "")
        self.rw = _flag(fields, "rw", False)
        if "ro" in fields:
            self.rw = not _flag(fields, "ro", True)
        self.id = fields.pop("id", "")
        self.sharing = fields.pop("sharing", "shared")
        self.mode = _octal(fields.pop("mode", ""), "mode")
        self.uid = _int(fields.pop("uid", ""), "uid")
        self.gid = _int(fields.pop("gid", ""), "gid")
        self.required = _flag(fields, "required", False)
        self.env = fields.pop("env", "")
        self.size = fields.pop("size", "")
        if self.sharing not in ("shared", "private", "locked"):
            raise BuildError(f"--mount: invalid sharing {self.sharing!r}: shared, private "
                             f"or locked")
        if fields:
            raise BuildError(f"--mount: unknown option {sorted(fields)[0]!r} for "
                             f"type={self.type}")
        if self.type == "secret":
            if not self.id and self.target:
                self.id = posixpath.basename(self.target)
            if not self.id:
                raise BuildError("--mount=type=secret needs an id")
            if not self.target and not self.env:
                self.target = "/run/secrets/" + self.id
        elif not self.target:
            raise BuildError(f"--mount=type={self.type} needs a target")


_ALIASES = {"dst": "target", "destination": "target", "src": "source", "readonly": "ro",
            "readwrite": "rw"}


def parse(text: str, expand) -> RunMount:
    """One ``--mount`` value (comma separated, CSV quoting as BuildKit's)."""
    try:
        items = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise BuildError(f"--mount: cannot parse {text!r}")
    fields: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not key:
            continue
        fields[key] = expand(value) if sep else ("true" if key in ("ro", "rw", "required")
                                                 else "")
    return RunMount(fields, text)


def _flag(fields: dict, key: str, default: bool) -> bool:
    if key not in fields:
        return default
    v = fields.pop(key).lower()
    if v not in _BOOL:
        raise BuildError(f"--mount: invalid value {v!r} for {key}")
    return _BOOL[v]


def _octal(v: str, what: str):
    if not v:
        return None
    try:
        return int(v, 8)
    except ValueError:
        raise BuildError(f"--mount: invalid {what} {v!r}: an octal number")


def _int(v: str, what: str):
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        raise BuildError(f"--mount: invalid {what} {v!r}: a number")


class StepMounts:
    """The mounts of one RUN step: prepared before the container is created, released
    after it is gone.  ``volumes``/``tmpfs``/``env`` feed RunOptions."""

    def __init__(self, builder, st, mounts: list):
        self.b = builder
        self.st = st
        self.mounts = mounts
        self.volumes: list = []
        self.tmpfs: list = []
        self.env: list = []
        self.stubs: list = []
        self._temps: list = []
        self._locks: list = []

    # -- the cache key: what a bind shows --------------------------------------------------

    def key(self) -> str:
        out = []
        for m in self.mounts:
            out.append(m.text)
            if m.type == "bind" or (m.type == "cache" and m.from_):
                if m.from_:
                    _view, built = self.b._stage_or_image(m.from_)
                    out.append("image:" + (built.image_id or "") + ":" + m.source)
                else:
                    rel = _rel(m.source)
                    if self.b.ctx.lookup(rel) is None and rel:
                        raise BuildError(f"--mount: {m.source!r} not found in the build context")
                    out.append("context:" + self.b.ctx.digest([rel]))
        return "|".join(out)

    # -- set up and tear down ---------------------------------------------------------------

    def __enter__(self):
        try:
            for m in self.mounts:
                self._prepare(m)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks = []
        for entry in self._temps:
            entry.discard()
        self._temps = []

    def _target(self, m: RunMount) -> str:
        workdir = self.st.cfg.get("WorkingDir") or "/"
        return posixpath.normpath(posixpath.join(workdir, m.target))

    def _temp(self):
        entry = self.b.store.temp("build")
        os.makedirs(entry.path, mode=0o700)
        self._temps.append(entry)
        return entry.path

    def _add(self, source: str, target: str, rw: bool) -> None:
        for path in (target, source):  # `-v SRC:DST:ro` below
            if ":" in path:
                raise BuildError(f"--mount: {path!r}: a path with ':' is not supported")
        self.volumes.append(f"{source}:{target}:{'rw' if rw else 'ro'}")
        self.stubs.append(target)

    def _prepare(self, m: RunMount) -> None:
        if m.type == "tmpfs":
            target = self._target(m)
            self.tmpfs.append(target + (f":size={m.size}" if m.size else ""))
            self.stubs.append(target)
        elif m.type == "bind":
            self._add(self._bind_source(m), self._target(m), m.rw)
        elif m.type == "cache":
            self._add(self._cache_dir(m), self._target(m), True)
        elif m.type == "secret":
            self._secret(m)

    def _bind_source(self, m: RunMount) -> str:
        rel = _rel(m.source)
        if not m.from_:
            host = self.b.ctx.lookup(rel) if rel else self.b.ctx.root
            if host is None:
                raise BuildError(f"--mount: {m.source!r} not found in the build context")
            st = os.lstat(host)
            if (not m.rw and self.b.ctx.ignore is None and not stat.S_ISLNK(st.st_mode)
                    and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode))):
                return host
            out = os.path.join(self._temp(), "src")
            self.b._copy_context(rel, out, 0, 0, None, stat.S_ISDIR(st.st_mode))
            return _followable(out)
        view, _built = self.b._stage_or_image(m.from_)
        parts = [p for p in rel.split("/") if p]
        node = view.lookup(parts) if parts else view.root
        if node is None:
            raise BuildError(f"--mount: {m.source or '/'!r} not found in {m.from_}")
        out = os.path.join(self._temp(), "src")
        self.b._copy_node(view, node, out, None, None, None, node.is_dir)
        return _followable(out)

    def _cache_dir(self, m: RunMount) -> str:
        cid = m.id or self._target(m)
        top = os.path.join(self.b.store.root, MOUNTS_DIR)
        os.makedirs(top, mode=0o700, exist_ok=True)
        path = os.path.join(top, hashlib.sha256(cid.encode()).hexdigest())
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if m.sharing == "shared":
                fcntl.flock(fd, fcntl.LOCK_SH)
            elif m.sharing == "locked":
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    fd = -1
                    path = os.path.join(self._temp(), "cache")  # busy: a fresh one
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        if fd >= 0:
            self._locks.append(fd)
        if not os.path.isdir(path):
            self._new_cache(m, path)
        return path

    def _new_cache(self, m: RunMount, path: str) -> None:
        tmp = self._temp()
        seed = os.path.join(tmp, "cache")
        if m.from_:
            view, _built = self.b._stage_or_image(m.from_)
            parts = [p for p in _rel(m.source).split("/") if p]
            node = view.lookup(parts) if parts else view.root
            if node is None or not node.is_dir:
                raise BuildError(f"--mount: {m.source or '/'!r} is no directory in {m.from_}")
            self.b._copy_node(view, node, seed, None, None, None, True)
        else:
            os.mkdir(seed)
        os.chmod(seed, m.mode if m.mode is not None else 0o755)
        self.b._own(seed, m.uid or 0, m.gid or 0)
        try:
            os.rename(seed, path)
        except OSError:
            if not os.path.isdir(path):  # another build made it meanwhile: use theirs
                raise

    def _secret(self, m: RunMount) -> None:
        data = self.b.secret(m.id)
        if data is None:
            if m.required:
                raise BuildError(f"secret {m.id} not found: give it with --secret id={m.id},"
                                 f"src=PATH")
            return
        if m.env:
            self.env.append(f"{m.env}={data.decode('utf-8', 'replace')}")
        if not m.target:
            return
        path = os.path.join(self._temp(), "secret")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, m.mode if m.mode is not None else 0o400)
        self.b._own(path, m.uid or 0, m.gid or 0)
        self._add(path, self._target(m), False)


def _rel(source: str) -> str:
    return "/".join(p for p in posixpath.normpath("/" + (source or "")).split("/") if p)


def _followable(path: str) -> str:
    """A copied source that is a link: binding it would follow it outside the copy."""
    if os.path.islink(path):
        raise BuildError("--mount: the source is a symbolic link")
    return path


def prune_cache_mounts(store) -> int:
    """`builder prune`: remove the cache mounts no build is using; bytes freed."""
    import shutil

    top = os.path.join(store.root, MOUNTS_DIR)
    try:
        names = sorted(os.listdir(top))
    except FileNotFoundError:
        return 0
    freed = 0
    for name in names:
        if name.endswith(".lock"):
            continue
        path = os.path.join(top, name)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a build is using it
            for dirpath, _dirs, filenames in os.walk(path):
                for n in filenames:
                    try:
                        freed += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
                    except OSError:
                        pass
            shutil.rmtree(path, ignore_errors=True)
            os.unlink(path + ".lock")
        finally:
            os.close(fd)
    return freed
