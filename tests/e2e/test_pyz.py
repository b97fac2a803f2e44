"""The .pyz: its shell part, and the unpacking of its Python part to the user cache on
first run (zipapp/launch.sh, zipapp/_pbox_launcher.py).

Runs only with a built archive (``--pyz`` / ``PBOX_TEST_PYZ``).  Most tests here run it
as ``python3 pbox.pyz``; every other e2e test runs it as a program.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from harness import modules_in


@pytest.fixture
def pyz(pbox_cmd):
    if pbox_cmd[1:2] == ["-m"]:
        pytest.skip("needs a built .pyz (--pyz or PBOX_TEST_PYZ)")
    return pbox_cmd[0]


def _payload_dirs(cache: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(cache, "pyz")))
    except FileNotFoundError:
        return []


def test_concurrent_first_runs_unpack_one_copy(pyz, pbox_root):
    cache = pbox_root.cache_dir
    assert _payload_dirs(cache) == []
    procs = [subprocess.Popen([sys.executable, pyz, "images", "-q"], env=pbox_root.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    dirs = _payload_dirs(cache)
    assert len(dirs) == 1, dirs  # no temp dir left by the losers of the rename
    base = os.path.join(cache, "pyz", dirs[0])
    assert os.path.isfile(os.path.join(base, "pbox", "cli.py"))
    assert os.path.isfile(os.path.join(base, "click", "__init__.py"))
    assert not os.path.exists(os.path.join(base, "_native"))
    # pbox ran from the unpacked tree: its byte code is cached there
    cached = os.listdir(os.path.join(base, "pbox", "__pycache__"))
    assert any(n.startswith("cli.") and n.endswith(".pyc") for n in cached), cached

    # a later run uses the same copy
    subprocess.run([sys.executable, pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    assert _payload_dirs(cache) == dirs


def test_unwritable_cache_runs_from_the_archive(pyz, pbox_root, tmp_path):
    if os.getuid() == 0:
        pytest.skip("root writes anywhere")
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = pbox_root.env_with({"PBOX_CACHE_DIR": str(cache)})
    r = subprocess.run([sys.executable, pyz, "images", "-q"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.listdir(cache) == []


def test_stale_temp_dir_of_an_interrupted_unpack_is_removed(pyz, pbox_root):
    parent = os.path.join(pbox_root.cache_dir, "pyz")
    stale = os.path.join(parent, "0123abcd.tmp-interrupted")
    fresh = os.path.join(parent, "4567ef01.tmp-running")
    for d in (stale, fresh):
        os.makedirs(os.path.join(d, "pbox"))
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    subprocess.run([sys.executable, pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    left = _payload_dirs(pbox_root.cache_dir)
    assert "0123abcd.tmp-interrupted" not in left
    assert "4567ef01.tmp-running" in left  # may belong to a first run going on now


def test_first_run_of_a_build_removes_copies_of_builds_unused_for_a_month(pyz, pbox_root):
    parent = os.path.join(pbox_root.cache_dir, "pyz")
    month_ago = time.time() - 31 * 86400
    dirs = {"unused": "a" * 32, "ran-lately": "b" * 32, "new": "c" * 32,
            "not-a-build": "my-notes"}
    for key, name in dirs.items():
        cache = os.path.join(parent, name, "__pycache__")
        os.makedirs(cache)
        with open(os.path.join(cache, "_pbox_launcher.cpython-311.pyc"), "wb") as f:
            f.write(b"x")
        if key == "new":
            continue
        for path in (os.path.join(cache, "_pbox_launcher.cpython-311.pyc"), cache,
                     os.path.dirname(cache)):
            os.utime(path, (month_ago, month_ago))
    # unpacked a month ago, but its byte code was read yesterday: still in use
    used = os.path.join(parent, dirs["ran-lately"], "__pycache__",
                        "_pbox_launcher.cpython-311.pyc")
    os.utime(used, (time.time() - 86400, month_ago))
    subprocess.run([sys.executable, pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    left = _payload_dirs(pbox_root.cache_dir)
    assert dirs["unused"] not in left
    assert {dirs["ran-lately"], dirs["new"], dirs["not-a-build"]} <= set(left)
    assert not [d for d in left if ".tmp-" in d]
    assert len(left) == 4  # and this build's own copy
    # a run of a build already unpacked removes nothing
    os.utime(os.path.join(parent, dirs["new"]), (month_ago, month_ago))
    os.utime(os.path.join(parent, dirs["new"], "__pycache__"), (month_ago, month_ago))
    os.utime(os.path.join(parent, dirs["new"], "__pycache__", "_pbox_launcher.cpython-311.pyc"),
             (month_ago, month_ago))
    subprocess.run([sys.executable, pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    assert dirs["new"] in _payload_dirs(pbox_root.cache_dir)


def test_bundled_compiled_modules_load_from_the_archive(pyz, pbox_root):
    """isal (gzip inflate) and zstandard come out of the archive's _native/ on first use,
    for the Python running it (scripts/build_pyz.sh bundles CPython 3.9-3.13)."""
    r = subprocess.run([sys.executable, pyz, "info", "--format", "{{.GzipInflater}}"],
                       env=pbox_root.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "isal"
    natives = os.listdir(os.path.join(pbox_root.cache_dir, "native"))
    assert any(os.path.isdir(os.path.join(pbox_root.cache_dir, "native", d, "isal"))
               for d in natives), natives
    # a later run finds that copy by the stamp the build wrote, without reading the
    # archive (zipfile would be imported to compute it or to unpack it again)
    again = subprocess.run([sys.executable, "-X", "importtime", pyz, "info", "--format",
                            "{{.GzipInflater}}"], env=pbox_root.env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == "isal", again.stderr[-2000:]
    imported = modules_in(again.stderr)
    # (isal.isal_zlib alone: the package's __init__ is not run, see compression.py)
    assert "isal.isal_zlib" in imported and "zipfile" not in imported
    assert os.listdir(os.path.join(pbox_root.cache_dir, "native")) == natives


def _read_the_archive(stderr: str, pyz: str) -> bool:
    """Whether a run with PYTHONVERBOSE=1 read the archive's directory (zipimport)."""
    return any(line.startswith("# zipimport: found") and pyz in line
               for line in stderr.splitlines())


def test_as_a_program_a_run_after_the_first_opens_nothing_but_the_unpacked_copy(
        pyz, pbox_root):
    env = pbox_root.env_with({"PYTHONVERBOSE": "1", "PYTHONPROFILEIMPORTTIME": "1"})
    first = subprocess.run([pyz, "images", "-q"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert _read_the_archive(first.stderr, pyz)  # it unpacked from there
    assert len(_payload_dirs(pbox_root.cache_dir)) == 1
    again = subprocess.run([pyz, "images", "-q"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not _read_the_archive(again.stderr, pyz)
    modules = modules_in(again.stderr)
    assert "pbox.commands.fast" in modules  # (the measurement saw pbox start)
    for name in ("site", "runpy", "zipfile", "zlib", "contextlib"):
        assert name not in modules, name
    # `python3 pbox.pyz` still goes through runpy and the archive (the reference)
    plain = subprocess.run([sys.executable, pyz, "images", "-q"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert _read_the_archive(plain.stderr, pyz) and "runpy" in modules_in(plain.stderr)
    assert plain.stdout == again.stdout == first.stdout


def test_as_a_program_the_payload_is_found_under_xdg_cache_home(pyz, pbox_root, tmp_path):
    """The shell part looks for the unpacked copy where the launcher puts it."""
    cache = tmp_path / "xdg"
    env = pbox_root.env_with({"PBOX_CACHE_DIR": None, "XDG_CACHE_HOME": str(cache),
                              "PYTHONVERBOSE": "1"})
    for _ in range(2):
        r = subprocess.run([pyz, "--log-level", "debug", "images", "-q"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    assert len(_payload_dirs(str(cache / "pbox"))) == 1
    assert not _read_the_archive(r.stderr, pyz)


def test_as_a_program_from_a_path_with_spaces_and_quotes(pyz, pbox_root, tmp_path):
    where = tmp_path / "my \"odd\" dir's"
    where.mkdir()
    prog = str(where / "pbox")
    shutil.copy2(pyz, prog)
    r = subprocess.run([prog, "images", "-q"], env=pbox_root.env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    odd = "nope 'q' \"$HOME\" * `x`"
    r = subprocess.run([prog, "inspect", odd], env=pbox_root.env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 125, r
    assert r.stderr == f"Error: invalid reference format: {odd!r}\n", r  # as given


def test_as_a_program_python_is_found_on_path_or_named_by_pbox_python(pyz, pbox_root,
                                                                      tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = pbox_root.env_with({"PATH": str(empty)})
    r = subprocess.run([pyz, "--version"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 127 and "python3" in r.stderr, r
    env["PBOX_PYTHON"] = sys.executable
    r = subprocess.run([pyz, "--version"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("pbox version "), r


def _bundle_of(cache: str) -> str:
    """The one unpacked payload's bundle of pbox's byte code (skips without one: the
    archive's byte code was built by another Python than the one running the tests)."""
    dirs = _payload_dirs(cache)
    assert len(dirs) == 1, dirs
    tag = sys.implementation.cache_tag
    payload = os.path.join(cache, "pyz", dirs[0])
    # the archive's byte code, unpacked only when it is this Python's
    if not os.path.exists(os.path.join(payload, "pbox", "__pycache__",
                                       f"__init__.{tag}.pyc")):
        pytest.skip("the archive's byte code is for another Python: no bundle")
    path = os.path.join(payload, "__pycache__", f"pbox.{tag}.bundle")
    assert os.path.isfile(path)
    return path


def _pbox_code_files_read(stderr: str) -> list[str]:
    """The .pyc files of pbox modules a run with PYTHONVERBOSE=1 loaded."""
    inside = re.compile(r"pyz/[0-9a-f]+/pbox/")  # in the payload's pbox package
    return [line for line in stderr.splitlines()
            if line.startswith("# code object from") and inside.search(line)]


def test_pbox_modules_come_from_the_bundle(pyz, pbox_root):
    """After the first run, pbox's modules are read from one file (not a .pyc each),
    as a program and as ``python3 pbox.pyz``; the two print the same."""
    first = subprocess.run([pyz, "images"], env=pbox_root.env, capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    _bundle_of(pbox_root.cache_dir)
    env = pbox_root.env_with({"PYTHONVERBOSE": "1", "PYTHONPROFILEIMPORTTIME": "1"})
    for argv in ([pyz, "images"], [sys.executable, pyz, "images"]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout == first.stdout
        assert "pbox.commands.fast" in modules_in(r.stderr)  # pbox was imported...
        assert _pbox_code_files_read(r.stderr) == []  # ...but not from .pyc files


def _with_the_bundle(pyz, pbox_root, body: str) -> tuple[str, str]:
    """Run ``body`` (Python) after a first run of the .pyz, in a Python importing pbox
    through the launcher's bundle finder (``finder``); its output and the payload."""
    subprocess.run([pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    payload = os.path.dirname(os.path.dirname(_bundle_of(pbox_root.cache_dir)))
    script = (
        "import os, sys, traceback\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import _pbox_launcher as L\n"
        "finder = L._BundleFinder.open(sys.argv[1])\n"
        "sys.meta_path.insert(0, finder)\n"
    ) + body
    r = subprocess.run([sys.executable, "-S", "-c", script, payload], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout, payload


def test_bundled_modules_have_their_source_files(pyz, pbox_root):
    """A module from the bundle is one from the unpacked tree as far as its users can
    tell: ``__file__``, a package's ``__path__``, code and tracebacks name the sources."""
    out, payload = _with_the_bundle(pyz, pbox_root, (
        "import pbox, pbox.oci.reference as r\n"
        "assert r.__spec__.loader is finder and pbox.__spec__.loader is finder\n"
        "print(pbox.__file__); print(pbox.__path__[0]); print(r.__file__)\n"
        "print(r.parse.__code__.co_filename)\n"
        "try:\n"
        "    r.parse('UPPER/Case')\n"
        "except Exception:\n"
        "    print(traceback.extract_tb(sys.exc_info()[2])[-1].filename)\n"
    ))
    src = os.path.join(payload, "pbox")
    assert out.splitlines() == [
        os.path.join(src, "__init__.py"), src, os.path.join(src, "oci", "reference.py"),
        os.path.join(src, "oci", "reference.py"), os.path.join(src, "oci", "reference.py"),
    ]


@pytest.mark.parametrize("damage", ["truncated", "other-python", "longer"])
def test_a_damaged_bundle_is_not_used(pyz, pbox_root, damage):
    subprocess.run([pyz, "images", "-q"], env=pbox_root.env, check=True,
                   capture_output=True, timeout=120)
    path = _bundle_of(pbox_root.cache_dir)
    with open(path, "r+b") as f:
        if damage == "truncated":
            f.truncate(os.path.getsize(path) - 100)
        elif damage == "other-python":
            f.seek(4)
            f.write(b"\0\0\0\0")  # not this Python's byte code magic
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\0" * 10)
    env = pbox_root.env_with({"PYTHONVERBOSE": "1"})
    r = subprocess.run([pyz, "images", "-q"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _pbox_code_files_read(r.stderr)  # imported as usual, from the .pyc files


def test_a_short_read_of_the_bundle_imports_from_the_source(pyz, pbox_root):
    out, _ = _with_the_bundle(pyz, pbox_root, (
        "real = os.pread\n"
        "os.pread = lambda fd, n, off: real(fd, n, off)[:-1]  # one byte short\n"
        "import pbox.oci.reference as r\n"
        "print(r.parse('busybox').string(), r.__file__ == r.__spec__.origin)\n"
    ))
    assert out.split() == ["docker.io/library/busybox:latest", "True"]
