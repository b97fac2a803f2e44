"""The launcher of dist/pbox.pyz (in the archive, and unpacked with pbox).

**Two ways in.**  ``python3 pbox.pyz ...`` runs the archive's ``__main__.py``, which
calls :func:`main`.  Run as a program (``pbox ...`` once installed), the archive is a
shell script first (``zipapp/launch.sh``, ahead of the zip data): it starts python3
without ``site`` (everything pbox needs is bundled) and, when this build's Python part
is unpacked in the user cache already, imports this module from there, without
opening the archive; otherwise from the archive, like ``python3 pbox.pyz``.  Both end
in :func:`main`.  The program route skips ``site``, ``runpy`` (and the ``importlib.util``,
``contextlib`` and ``collections`` it imports) and reading the archive's directory:
about 6 ms of every command.

**Pure-Python part.**  ``zipimport`` never writes byte code and reads every module out
of the archive through Python code, so running from the zip costs tens of milliseconds
per command (more on a Python the bundled byte code was not built for: it compiles
every module it imports, every time).  So the first run unpacks the archive's Python
part (pbox, its pure-Python dependencies and this module) to
``<user cache>/pbox/pyz/<payload id>/`` and every run imports from there, as from an
installed package; Python caches the byte code there as usual.  The payload id is a
hash of the bundled files, written into this file and into the shell part by
``scripts/build_pyz.sh``: a new build unpacks anew, two copies of the same build share
one directory.  The unpacking goes to a temp dir that is renamed into place when
complete, so concurrent first runs are safe (the loser of the rename throws its copy
away) and an interrupted one leaves only a temp dir (removed by a later first run once
it is an hour old).  The first run of a new build also removes the copies of other
builds that have not run for 30 days (``_tidy``): ~10 MB each, they would pile
up with every upgrade.  When the cache cannot be written, pbox runs from the archive.

**One file of byte code.**  The unpacking also writes the byte code of the ``pbox``
package, when it was built for this Python, into one file
(``__pycache__/pbox.<cache tag>.bundle``: an index, then each module's code), and
every run imports pbox's modules from it (:class:`_BundleFinder`): no search of
``sys.path``, no ``stat`` or ``open`` per module, ~40 us less for each of the ~40
modules a pull imports.  The files stay where they are, for tracebacks and for any
other Python (which has no bundle, and imports as usual).

**Compiled part.**  A zip archive cannot hold an importable compiled module, so the
archive carries the ``zstandard`` and ``isal`` extensions for several CPython versions
under ``_native/<cache tag>/``.  The first time pbox imports one of them on this
Python, the matching copy is unpacked to the user cache (temp dir, then rename,
likewise) and put on ``sys.path``.  Without a matching copy the import fails and pbox
does without: the ``zstd`` program instead of ``zstandard``, ``zlib`` instead of
``isal``.
"""

import _imp  # (both built in: importing them costs nothing)
import marshal
import os
import sys

NATIVE = ("zstandard", "isal")
PAYLOAD_ID = "@PAYLOAD_ID@"  # replaced by scripts/build_pyz.sh (also in zipapp/launch.sh)
VERSION = "@VERSION@"  # likewise: pbox's version, so --version imports nothing
NATIVE_PREFIX = "_native/"
# "<cache tag>/<name>" -> the stamp of its bundled copy (see _NativeFinder._unpack),
# written by scripts/build_pyz.sh so that a run whose copy is unpacked already finds
# it without reading the archive (``zipfile`` and what it imports: ~9 ms)
NATIVE_STAMPS = "@NATIVE_STAMPS@"
STALE_TEMP = 3600  # seconds after which a temp dir of an interrupted unpack is removed
UNUSED_PAYLOAD = 30 * 86400  # seconds after which another build's unpacked copy goes
BUNDLED = "pbox"  # the package whose byte code goes into the bundle
BUNDLE_MAGIC = b"PBXB"


def _cache_dir():
    # zipapp/launch.sh finds the payload in the same place: keep the two alike
    return os.environ.get("PBOX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pbox")


def _install(tmp, base):
    """Rename the complete ``tmp`` to ``base``; if another process was first, keep its copy."""
    try:
        os.rename(tmp, base)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(base):
            raise


def _last_use(path):
    """When the unpacked copy ``path`` was last run, as far as the file system tells:
    every run reads its ``__pycache__`` (the launcher's byte code, the bundle), whose
    access times the usual ``relatime`` mounts keep to within a day; without access
    times, when it was unpacked."""
    last = os.lstat(path).st_mtime
    cache = os.path.join(path, "__pycache__")
    try:
        names = os.listdir(cache)
    except OSError:
        return last
    for name in names:
        try:
            st = os.lstat(os.path.join(cache, name))
        except OSError:
            continue
        last = max(last, st.st_atime, st.st_mtime)
    return last


def _tidy(parent, keep):
    """Remove from ``parent`` the temp dirs of unpacks interrupted over ``STALE_TEMP``
    seconds ago, and the unpacked copies of other builds (``<payload id>``: 32 hex
    digits) not run for ``UNUSED_PAYLOAD`` seconds, so that upgrades do not pile up
    ~10 MB each.  Run by the first run of a build (``keep``) only; a pruned build run
    again unpacks itself anew.  A copy is renamed away first: no run finds half of it."""
    import shutil
    import time

    now = time.time()
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        path = os.path.join(parent, entry)
        try:
            if ".tmp-" in entry:
                if now - os.lstat(path).st_mtime > STALE_TEMP:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            if entry == keep or len(entry) != 32 or entry.strip("0123456789abcdef") or \
                    now - _last_use(path) <= UNUSED_PAYLOAD:
                continue
            doomed = f"{path}.tmp-unused-{os.getpid()}"
            os.rename(path, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)


def unpack_payload(archive):
    """The directory holding the archive's Python part, unpacked on first use (or None)."""
    if PAYLOAD_ID.startswith("@"):  # not built by build_pyz.sh
        return None
    parent = os.path.join(_cache_dir(), "pyz")
    base = os.path.join(parent, PAYLOAD_ID)
    if os.path.isdir(base):
        return base
    import tempfile
    import zipfile
    from importlib.util import MAGIC_NUMBER

    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=PAYLOAD_ID + ".tmp-", dir=parent)
    try:
        tag = sys.implementation.cache_tag
        made = set()
        bundle = []  # (module name, package?, path of its source, code) for the bundle
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                rel = info.filename
                parts = rel.split("/")
                if (info.is_dir() or rel.startswith(NATIVE_PREFIX)
                        or rel in ("__main__.py", "__main__.pyc")
                        or rel.startswith("/") or ".." in parts or "" in parts):
                    continue
                data = z.read(info)
                if rel.endswith(".pyc"):
                    # byte code built next to each source: usable when it was built
                    # for this Python; it goes where the import system looks for it
                    if not data.startswith(MAGIC_NUMBER):
                        continue
                    if parts[0] == BUNDLED:
                        names = parts[:-1] + [parts[-1][:-4]]
                        package = names[-1] == "__init__"
                        if package:
                            names.pop()
                        bundle.append((".".join(names), package, rel[:-1], data[16:]))
                    parts = parts[:-1] + ["__pycache__", f"{parts[-1][:-4]}.{tag}.pyc"]
                dest_dir = os.path.join(tmp, *parts[:-1])
                if dest_dir not in made:
                    os.makedirs(dest_dir, exist_ok=True)
                    made.add(dest_dir)
                with open(os.path.join(dest_dir, parts[-1]), "wb") as out:
                    out.write(data)
        if bundle:
            _write_bundle(os.path.join(tmp, "__pycache__", f"{BUNDLED}.{tag}.bundle"),
                          MAGIC_NUMBER, bundle)
        os.chmod(tmp, 0o755)
        _install(tmp, base)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _tidy(parent, PAYLOAD_ID)
    return base


def _write_bundle(path, magic, modules):
    """The bundle: ``BUNDLE_MAGIC``, the Python's byte code magic, the index's length
    (4 bytes, little endian), the index (marshal: name -> (package?, source path
    relative to the payload, offset, size)), then each module's code (marshal)."""
    index, blobs, offset = {}, [], 0
    for name, package, source, code in modules:
        index[name] = (package, source, offset, len(code))
        blobs.append(code)
        offset += len(code)
    head = marshal.dumps(index)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(BUNDLE_MAGIC + magic + len(head).to_bytes(4, "little") + head)
        for blob in blobs:
            f.write(blob)


class _BundleFinder:
    """Imports the modules of one bundle file (see :func:`_write_bundle`): a module's
    code is read with one ``pread`` and run in a module whose ``__file__`` is its
    unpacked source.  :meth:`open` gives None for a missing bundle, one made for
    another Python, or one of the wrong size."""

    def __init__(self, fd, index, start, base):
        self._fd, self._index, self._start, self._base = fd, index, start, base

    @classmethod
    def open(cls, base):
        path = os.path.join(base, "__pycache__",
                            f"{BUNDLED}.{sys.implementation.cache_tag}.bundle")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
            head = os.pread(fd, 1 << 16, 0)
            if head[:8] != BUNDLE_MAGIC + magic:
                raise ValueError("a bundle of another Python")
            n = int.from_bytes(head[8:12], "little")
            if 12 + n > len(head):
                head = os.pread(fd, 12 + n, 0)
            index = marshal.loads(head[12 : 12 + n])
            end = 12 + n + sum(entry[3] for entry in index.values())
            if os.fstat(fd).st_size != end:
                raise ValueError("a bundle of the wrong size")
        except Exception:  # unusable: the modules are imported as usual
            os.close(fd)
            return None
        return cls(fd, index, 12 + n, base)

    def find_spec(self, name, path=None, target=None):
        entry = self._index.get(name)
        if entry is None:
            return None
        package, source = entry[0], os.path.join(self._base, entry[1])
        spec = sys.modules["_frozen_importlib"].ModuleSpec(name, self, origin=source,
                                                            is_package=package)
        if package:
            spec.submodule_search_locations = [os.path.dirname(source)]
        spec.has_location = True  # __file__ is the source
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        spec = module.__spec__
        _, _, offset, size = self._index[spec.name]
        data = os.pread(self._fd, size, self._start + offset)
        if len(data) != size:  # (not on a local file system): from the source instead
            loader = sys.modules["_frozen_importlib_external"].SourceFileLoader
            loader(spec.name, spec.origin).exec_module(module)
            return
        code = marshal.loads(data)
        _imp._fix_co_filename(code, spec.origin)
        exec(code, module.__dict__)


class _NativeFinder:
    """A meta path finder that unpacks a bundled compiled package on first import."""

    def __init__(self, archive):
        self.archive = archive
        self.pending = set(NATIVE)

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)
        if not self.pending:
            sys.meta_path.remove(self)
        try:
            where = self._unpack(name)
        except Exception:
            where = None
        if where and where not in sys.path:
            sys.path.insert(0, where)
        return None  # let the normal finders import it from there

    def _unpack(self, name):
        tag = sys.implementation.cache_tag  # e.g. cpython-311
        if isinstance(NATIVE_STAMPS, dict):  # a built archive: it knows its copies
            stamp = NATIVE_STAMPS.get(f"{tag}/{name}")
            if stamp is None:
                return None  # none for this Python
            base = os.path.join(_cache_dir(), "native", f"{tag}-{stamp}")
            if os.path.isdir(os.path.join(base, name)):
                return base
        import zipfile

        prefix = f"{NATIVE_PREFIX}{tag}/{name}/"
        with zipfile.ZipFile(self.archive) as z:
            members = [i for i in z.infolist() if i.filename.startswith(prefix)]
            if not members:
                return None
            # Named by content, so every pbox.pyz with the same module shares one copy.
            stamp = f"{sum(i.CRC for i in members):x}-{sum(i.file_size for i in members):x}"
            base = os.path.join(_cache_dir(), "native", f"{tag}-{stamp}")
            if os.path.isdir(os.path.join(base, name)):
                return base
            os.makedirs(os.path.dirname(base), exist_ok=True)
            tmp = f"{base}.tmp-{os.getpid()}"
            for info in members:
                rel = info.filename[len(f"{NATIVE_PREFIX}{tag}/"):]
                if info.is_dir() or ".." in rel.split("/"):
                    continue
                dest = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    out.write(src.read())
                os.chmod(dest, 0o755 if dest.endswith(".so") else 0o644)
            _install(tmp, base)
            return base


def main(archive=None):
    """Run pbox.  ``archive``: the .pyz file, when this module was imported from its
    unpacked copy (by zipapp/launch.sh); by default, where this module was found."""
    if sys.argv[1:] in (["--version"], ["-v"]):
        # The hot path of scripts that probe for a tool: no import of the CLI at all.
        if VERSION.startswith("@"):
            from pbox import __version__ as version
        else:
            version = VERSION
        sys.stdout.write(f"pbox version {version}\n")
        return
    here = os.path.dirname(os.path.abspath(__file__))
    archive = os.path.abspath(archive) if archive else here
    if os.path.isfile(archive):  # run from a .pyz (not from a source tree)
        where = here  # the unpacked copy this module came from
        if here == archive:  # imported from the archive: use the unpacked copy
            try:
                where = unpack_payload(archive)
            except Exception:  # a read-only or full cache: run from the archive
                where = None
            if where:
                gone = [p for p in sys.path if os.path.abspath(p) == archive]
                sys.path = [where if p in gone else p for p in sys.path]
                if where not in sys.path:
                    sys.path.insert(0, where)
                for p in gone:
                    sys.path_importer_cache.pop(p, None)
        bundle = _BundleFinder.open(where) if where else None
        if bundle is not None:
            sys.meta_path.insert(0, bundle)
        sys.meta_path.insert(0, _NativeFinder(archive))
    from pbox.commands.fast import main as pbox_main

    pbox_main()
