"""The build context: a directory (or a tar read from stdin) that COPY and ADD read from.

Nothing outside the context root is ever read: source paths are resolved one
component at a time with ``lstat`` and a symbolic link on the way is refused, so a
link in the context is copied as a link, never followed.  Paths the
``.dockerignore`` excludes do not exist for COPY.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile

from pbox.errors import BuildError, UsageError


class FileSums:
    """Content digests of context files, remembered across builds by what the kernel
    says of the file (device, inode, size, mtime and ctime in ns: any write changes the
    ctime, which no user can set back), so an unchanged large file is not read again to
    find a COPY step's cache key.  A cache: a lost or damaged file only costs a read."""

    MIN_SIZE = 64 << 10  # smaller files are cheaper to read than to look up
    MAX_ENTRIES = 4096

    def __init__(self, path: str, store):
        self.path = path
        self.store = store
        self.sums: dict | None = None
        self.dirty = False

    @staticmethod
    def key(st) -> str:
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def get(self, st) -> str | None:
        if self.sums is None:
            loaded = self.store.read_json(self.path, {})
            self.sums = loaded if isinstance(loaded, dict) else {}
        value = self.sums.get(self.key(st))
        return value if isinstance(value, str) else None

    def put(self, st, digest: str) -> None:
        assert self.sums is not None
        self.sums[self.key(st)] = digest
        while len(self.sums) > self.MAX_ENTRIES:
            del self.sums[next(iter(self.sums))]
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            self.store.write_json(self.path, self.sums)
            self.dirty = False


class Context:
    def __init__(self, root: str, ignore=None):
        self.root = root
        self.ignore = ignore
        self.sums: FileSums | None = None

    @classmethod
    def open(cls, root: str, ignore_text: str | None = None) -> Context:
        if not os.path.isdir(root):
            raise UsageError(f"unable to prepare context: path {root!r} not found")
        if ignore_text is None:
            try:
                with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
                    ignore_text = f.read()
            except (FileNotFoundError, NotADirectoryError):
                ignore_text = ""
        ignore = None
        if ignore_text.strip():
            from pbox.build.ignore import DockerIgnore

            ignore = DockerIgnore.from_text(ignore_text)
        return cls(os.path.abspath(root), ignore)

    def ignored(self, rel: str) -> bool:
        return bool(self.ignore is not None and rel and self.ignore.matches(rel))

    def lookup(self, rel: str) -> str | None:
        """The host path of context path ``rel`` (no link followed), or None."""
        parts = [p for p in posixpath.normpath("/" + rel).split("/") if p]
        cur = self.root
        for i, p in enumerate(parts):
            cur = os.path.join(cur, p)
            try:
                st = os.lstat(cur)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                return None
        if self.ignored("/".join(parts)):
            return None
        return cur

    def glob(self, pattern: str) -> list[str]:
        """Context paths (relative, '' for the root) matching a COPY source."""
        norm = posixpath.normpath("/" + pattern).lstrip("/")
        if norm in ("", "."):
            return [""]
        if not any(c in norm for c in "*?["):
            return [norm] if self.lookup(norm) is not None else []
        parts = norm.split("/")
        found = [""]
        for pat in parts:
            nxt = []
            for base in found:
                host = self.lookup(base) if base else self.root
                if host is None or not os.path.isdir(host) or os.path.islink(host):
                    continue
                for name in sorted(os.listdir(host)):
                    if fnmatch.fnmatchcase(name, pat):
                        rel = posixpath.join(base, name) if base else name
                        if not self.ignored(rel):
                            nxt.append(rel)
            found = nxt
        return found

    def walk(self, rel: str):
        """(relative path, host path, lstat) of ``rel`` and everything below it, sorted,
        ignored paths left out."""
        host = self.lookup(rel) if rel else self.root
        if host is None:
            return
        st = os.lstat(host)
        yield rel, host, st
        if stat.S_ISDIR(st.st_mode):
            yield from self._walk_below(rel, host)

    def _walk_below(self, rel: str, host: str):
        for name in sorted(os.listdir(host)):
            child = posixpath.join(rel, name) if rel else name
            path = os.path.join(host, name)
            st = os.lstat(path)
            if not self.ignored(child):
                yield child, path, st
                if stat.S_ISDIR(st.st_mode):
                    yield from self._walk_below(child, path)
            elif stat.S_ISDIR(st.st_mode) and not self.ignore.excludes_dir_entirely(child):
                # ignored, but a `!` pattern may bring back something below it
                below = list(self._walk_below(child, path))
                if below:
                    yield child, path, st
                    yield from below

    def digest(self, rels: list[str]) -> str:
        """A hash of the names, modes and contents below ``rels`` (the COPY cache key)."""
        h = hashlib.sha256()
        for top in rels:
            for rel, host, st in self.walk(top):
                h.update(f"{rel}\0{st.st_mode:o}\0".encode())
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.fsencode(os.readlink(host)))
                elif stat.S_ISREG(st.st_mode):
                    h.update(self._file_digest(host, st))
                h.update(b"\0")
        if self.sums is not None:
            self.sums.save()
        return "sha256:" + h.hexdigest()

    def _file_digest(self, host: str, st) -> bytes:
        sums = self.sums if st.st_size >= FileSums.MIN_SIZE else None
        known = sums.get(st) if sums is not None else None
        if known is not None:
            return known.encode()
        fh = hashlib.sha256()
        with open(host, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                fh.update(block)
        if sums is not None and self.key_still(host, st):
            sums.put(st, fh.hexdigest())
        return fh.hexdigest().encode()

    @staticmethod
    def key_still(host: str, st) -> bool:
        """The file was not written while it was read (else its digest is not the one
        of the state ``st`` describes)."""
        try:
            return FileSums.key(os.lstat(host)) == FileSums.key(st)
        except OSError:
            return False


def extract_context_tar(stream, dest: str) -> None:
    """Unpack a context tar from ``stream`` into ``dest``: regular files, directories and
    links only, no name that leaves ``dest``."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for m in tf:
                name = posixpath.normpath("/" + m.name).lstrip("/")
                if not name or name == ".":
                    continue
                target = os.path.join(dest, name)
                parent = dest
                for part in name.split("/")[:-1]:
                    parent = os.path.join(parent, part)
                    if os.path.islink(parent):
                        raise BuildError(f"context tar: {m.name}: below a symbolic link")
                    if not os.path.isdir(parent):
                        os.mkdir(parent, 0o755)
                if os.path.lexists(target) and not (m.isdir() and os.path.isdir(target)
                                                    and not os.path.islink(target)):
                    os.unlink(target)  # a later member replaces an earlier one
                if m.isdir():
                    os.makedirs(target, exist_ok=True)
                    os.chmod(target, (m.mode & 0o7777) | 0o700)
                elif m.issym():
                    os.symlink(m.linkname, target)
                elif m.isreg():
                    with open(target, "wb") as f:
                        shutil.copyfileobj(tf.extractfile(m), f, 1 << 20)
                    os.chmod(target, m.mode & 0o7777)
                    os.utime(target, (m.mtime, m.mtime))
    except tarfile.TarError as e:
        raise BuildError(f"the context read from stdin is not a tar archive: {e}")
