"""`pbox doctor` on this host, as the user the suite runs as.

A user with a subordinate id range (``pboxtest``) gets every check ok (cgroups may
only warn: limits are optional); a user without one (``nosub``) gets the subuid check
failed with the usermod command that fixes it, and exit code 1.
"""

from __future__ import annotations

import json
import os
import pwd
import re

from harness import has_subuid

NAMES = ["userns", "subids", "newidmap", "overlay", "fuse", "tun", "network", "cgroups",
         "store", "runroot", "space"]
MAY_WARN = {"cgroups"}


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _taken_ranges() -> list[tuple[int, int]]:
    out = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        out.append((int(parts[1]), int(parts[1]) + int(parts[2])))
        except OSError:
            pass
    return out


def _checks(run_pbox, *args, rc=None, env=None) -> list[dict]:
    r = run_pbox("doctor", "--format", "json", *args, check=False, env=env)
    checks = json.loads(r.stdout)
    if rc is not None:
        assert r.returncode == rc, r.describe()
    return checks


def test_doctor_report_for_this_user(run_pbox):
    subuid = has_subuid()
    r = run_pbox("doctor", expect_rc=0 if subuid else 1)
    lines = r.stdout.splitlines()
    assert all(re.match(r"^(\[(ok|warn|fail)\] +\S|       fix: \S|$|\d+ failed|Everything)", ln)
               for ln in lines), r.stdout
    checks = {c["Name"]: c for c in _checks(run_pbox, rc=0 if subuid else 1)}
    assert [n for n in NAMES if n not in checks] == []
    for name, c in checks.items():
        assert c["Status"] in ("ok", "warn", "fail")
        if name == "subids" and not subuid:
            continue
        allowed = ("ok", "warn") if name in MAY_WARN else ("ok",)
        assert c["Status"] in allowed, c

    if subuid:
        assert "[fail]" not in r.stdout
        return
    c = checks["subids"]
    assert c["Status"] == "fail"
    m = re.fullmatch(r"sudo usermod --add-subuids (\d+)-(\d+) --add-subgids \1-\2 (\S+)",
                     c["Fix"])
    assert m, c["Fix"]
    lo, hi, user = int(m.group(1)), int(m.group(2)) + 1, m.group(3)
    assert user == _user() and hi - lo == 65536
    assert not any(a < hi and lo < b for a, b in _taken_ranges())  # a free range
    assert "[fail] /etc/subuid and /etc/subgid: " in r.stdout
    assert f"       fix: {c['Fix']}" in r.stdout


def test_doctor_template_format(run_pbox):
    r = run_pbox("doctor", "--format", "{{.Name}}={{.Status}}", check=False)
    got = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert list(got) == [n for n in got if n in NAMES + ["userns-clone", "apparmor-userns"]]
    assert set(NAMES) <= set(got)


def test_doctor_fails_for_an_unusable_store(run_pbox, tmp_path):
    # a store of a newer format than this pbox reads
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "version").write_text("99\n")
    checks = {c["Name"]: c for c in _checks(run_pbox, env={"PBOX_ROOT": str(newer)}, rc=1)}
    assert checks["store"]["Status"] == "fail" and "newer" in checks["store"]["Message"]

    if os.getuid() == 0:
        return  # root may write anywhere
    locked = tmp_path / "locked"
    locked.mkdir()
    try:
        locked.chmod(0o555)
        checks = {c["Name"]: c for c in _checks(
            run_pbox, env={"PBOX_ROOT": str(locked / "store"),
                           "PBOX_RUNROOT": str(locked / "run")}, rc=1)}
    finally:
        locked.chmod(0o755)
    for name in ("store", "runroot"):
        assert checks[name]["Status"] == "fail"
        assert checks[name]["Fix"] == f"sudo chown -R {_user()} {locked}"
