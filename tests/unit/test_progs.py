import os
import shutil

from pbox.rootless.progs import which


def test_which_finds_what_shutil_finds():
    for prog in ("sh", "ls", "sleep", "no-such-program-here"):
        assert which(prog) == shutil.which(prog)


def test_which_skips_directories_and_non_executables(tmp_path):
    (tmp_path / "d" / "tool").mkdir(parents=True)             # a directory named tool
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "tool").write_text("#!/bin/sh\n")       # not executable
    (tmp_path / "f").mkdir()
    good = tmp_path / "f" / "tool"
    good.write_text("#!/bin/sh\n")
    good.chmod(0o755)
    path = os.pathsep.join(str(tmp_path / d) for d in ("d", "e", "f"))
    assert which("tool", path) == str(good)
    assert which("tool", str(tmp_path / "e")) is None
    assert which(str(good)) == str(good)
    assert which(str(tmp_path / "e" / "tool")) is None
