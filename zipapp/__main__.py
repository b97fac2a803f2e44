"""Entry point of dist/pbox.pyz.

A zip archive cannot hold an importable compiled module, so the archive carries the
``zstandard`` extension for several CPython versions under ``_native/<cache tag>/``.
The first time pbox imports ``zstandard`` on this Python, the matching copy is
unpacked to the user cache (into a temp dir, then renamed, so two pbox processes
never see half a module) and put on ``sys.path``.  Without a matching copy the
import fails and pbox falls back to the ``zstd`` program.
"""

import sys

NATIVE = ("zstandard",)


class _NativeFinder:
    """A meta path finder that unpacks a bundled compiled package on first import."""

    def __init__(self, archive):
        self.archive = archive

    def find_spec(self, name, path=None, target=None):
        if name not in NATIVE:
            return None
        sys.meta_path.remove(self)
        try:
            where = self._unpack(name)
        except Exception:
            where = None
        if where and where not in sys.path:
            sys.path.insert(0, where)
        return None  # let the normal finders import it from there

    def _unpack(self, name):
        import os
        import zipfile

        tag = sys.implementation.cache_tag  # e.g. cpython-311
        prefix = f"_native/{tag}/{name}/"
        with zipfile.ZipFile(self.archive) as z:
            members = [i for i in z.infolist() if i.filename.startswith(prefix)]
            if not members:
                return None
            # Named by content, so every pbox.pyz with the same module shares one copy.
            stamp = f"{sum(i.CRC for i in members):x}-{sum(i.file_size for i in members):x}"
            cache = os.environ.get("PBOX_CACHE_DIR") or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pbox")
            base = os.path.join(cache, "native", f"{tag}-{stamp}")
            if os.path.isdir(os.path.join(base, name)):
                return base
            os.makedirs(os.path.dirname(base), exist_ok=True)
            tmp = f"{base}.tmp-{os.getpid()}"
            for info in members:
                rel = info.filename[len(f"_native/{tag}/"):]
                if info.is_dir() or ".." in rel.split("/"):
                    continue
                dest = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    out.write(src.read())
                os.chmod(dest, 0o755 if dest.endswith(".so") else 0o644)
            try:
                os.rename(tmp, base)
            except OSError:  # another process was first
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            return base


def main():
    if sys.argv[1:] in (["--version"], ["-v"]):
        # The hot path of scripts that probe for a tool: no import of the CLI at all.
        from pbox import __version__

        sys.stdout.write(f"pbox version {__version__}\n")
        return
    import os
    import zipfile

    archive = os.path.dirname(os.path.abspath(__file__))
    if zipfile.is_zipfile(archive):
        sys.meta_path.insert(0, _NativeFinder(archive))
    from pbox.cli import main as pbox_main

    pbox_main()


if __name__ == "__main__":
    main()
