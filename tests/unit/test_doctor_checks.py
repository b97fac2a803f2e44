"""The decisions of `pbox doctor`, from what was read of a host."""

from __future__ import annotations

import stat

import pytest

from pbox import doctor as d
from pbox.rootless import idmap

OK, WARN, FAIL = d.OK, d.WARN, d.FAIL
GOOD_PROBE = {"mode": "subuid", "unshare": None, "idmap": None, "nsmount": None,
              "overlay": None, "fuse": None}


def test_install_hints_follow_the_package_manager():
    assert d.install_hint("newuidmap", "apt-get") == "sudo apt-get install uidmap"
    assert d.install_hint("newuidmap", None) == "sudo apt-get install uidmap"
    assert d.install_hint("newuidmap", "dnf") == "sudo dnf install shadow-utils"
    assert d.install_hint("newuidmap", "apk") == "sudo apk add shadow-uidmap"
    assert d.install_hint("pasta", "pacman") == "sudo pacman -S passt"
    assert d.install_hint("fuse-overlayfs", "zypper") == "sudo zypper install fuse-overlayfs"


def test_sysctl_fix_applies_now_and_at_boot():
    fix = d.sysctl_fix("kernel.unprivileged_userns_clone", "1")
    assert "sudo sysctl -w kernel.unprivileged_userns_clone=1" in fix
    assert "/etc/sysctl.d/" in fix and "kernel.unprivileged_userns_clone=1' | sudo tee" in fix


@pytest.mark.parametrize("release,want,expected", [
    ("5.10.0-28-amd64", (5, 11), False),
    ("5.11.0", (5, 11), True),
    ("6.8.0-45-generic", (5, 11), True),
    ("4.19.0", (5, 11), False),
    ("6.18.44-fc-v669", (5, 11), True),
    ("5.15.0+", (5, 11), True),
    ("6", (5, 11), True),
])
def test_kernel_at_least(release, want, expected):
    assert d.kernel_at_least(release, want) is expected


def _r(owner, start, count):
    return idmap.SubRange(owner, start, count)


def test_free_subid_start_avoids_every_taken_range():
    assert d.free_subid_start([]) == 100000
    assert d.free_subid_start([_r("a", 100000, 65536)]) == 165536
    assert d.free_subid_start([_r("a", 100000, 65536), _r("b", 165536, 65536)]) == 231072
    assert d.free_subid_start([_r("a", 10000, 5000)]) == 100000  # below the start
    assert d.free_subid_start([_r("a", 150000, 100)]) == 165536
    assert d.free_subid_start([_r("a", 100000, 200001)]) == 100000 + 4 * 65536
    assert d.free_subid_start([_r("a", 231072, 10)]) == 100000  # the first gap fits


def test_userns_checks():
    c = d.check_userns("0\n", GOOD_PROBE)
    assert c.status == FAIL and "user.max_user_namespaces=" in c.fix
    c = d.check_userns("96365\n", {"unshare": "Operation not permitted"})
    assert c.status == FAIL and "Operation not permitted" in c.message
    c = d.check_userns("96365\n", {"unshare": None, "selfmap": "Operation not permitted"})
    assert c.status == FAIL and "map your own id" in c.message
    c = d.check_userns("96365\n", {"unshare": None, "nsmount": "Operation not permitted"})
    assert c.status == FAIL and "security module" in c.message
    c = d.check_userns("96365\n", GOOD_PROBE)
    assert c.status == OK and "96365" in c.message and not c.fix
    assert d.check_userns(None, GOOD_PROBE).status == OK  # a kernel without the sysctl
    assert d.check_userns("15000", None, root=True).status == OK


def test_debian_and_apparmor_switches():
    assert d.check_userns_clone(None) is None
    c = d.check_userns_clone("0\n")
    assert c.status == FAIL and "kernel.unprivileged_userns_clone=1" in c.fix
    assert d.check_userns_clone("1\n").status == OK

    assert d.check_apparmor(None, GOOD_PROBE) is None
    assert d.check_apparmor("0\n", None).status == OK
    assert d.check_apparmor("1\n", GOOD_PROBE).status == OK  # a profile allows us
    c = d.check_apparmor("1\n", {"unshare": None, "nsmount": "Operation not permitted"})
    assert c.status == FAIL and "kernel.apparmor_restrict_unprivileged_userns=0" in c.fix
    assert d.check_apparmor("1\n", None).status == FAIL


SUBUID = "# ranges\npboxtest:100000:65536\n"


def test_subids_missing_gives_the_usermod_fix_with_a_free_range():
    c = d.check_subids("nosub", 1002, SUBUID, SUBUID)
    assert c.status == FAIL
    assert c.fix == "sudo usermod --add-subuids 165536-231071 --add-subgids 165536-231071 nosub"
    assert "/etc/subuid and /etc/subgid" in c.message
    c = d.check_subids("nosub", 1002, None, None)  # files missing
    assert c.status == FAIL
    assert c.fix == "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nosub"


def test_subids_present_partial_or_small():
    assert d.check_subids("pboxtest", 1001, SUBUID, SUBUID).status == OK
    assert d.check_subids("renamed", 1001, "1001:100000:65536\n",
                          "1001:100000:65536\n").status == OK  # by numeric uid
    c = d.check_subids("pboxtest", 1001, SUBUID, "")
    assert c.status == FAIL and "/etc/subgid" in c.message and "/etc/subuid" not in c.message
    c = d.check_subids("pboxtest", 1001, "pboxtest:100000:1000\n", SUBUID)
    assert c.status == WARN and "1000 subordinate uids" in c.message
    assert "--add-subuids 165536-231071" in c.fix  # the new range does not overlap the old
    assert d.check_subids("root", 0, "", "", root=True).status == OK


def _helper(program, path="/usr/bin/x", mode=0o4755, owner=0, caps=False):
    return d.HelperInfo(program, path, stat.S_IFREG | mode, owner, caps)


def test_newidmap():
    both = [_helper("newuidmap"), _helper("newgidmap")]
    c = d.check_newidmap(both, "apt-get", GOOD_PROBE)
    assert c.status == OK and "setuid root" in c.message and "map your ranges" in c.message
    c = d.check_newidmap([_helper("newuidmap", path=None), _helper("newgidmap", path=None)],
                         "apt-get", None)
    assert c.status == FAIL and c.fix == "sudo apt-get install uidmap"
    assert "newuidmap and newgidmap not found" in c.message
    c = d.check_newidmap([_helper("newuidmap", "/usr/bin/newuidmap", mode=0o755),
                          _helper("newgidmap")], "apt-get", None)
    assert c.status == FAIL and c.fix == "sudo chmod u+s /usr/bin/newuidmap"
    c = d.check_newidmap([_helper("newuidmap", mode=0o755, caps=True),
                          _helper("newgidmap", mode=0o755, caps=True)], "dnf", None)
    assert c.status == OK and "file capabilities" in c.message
    c = d.check_newidmap([_helper("newuidmap", mode=0o4755, owner=1000),
                          _helper("newgidmap")], "apt-get", None)
    assert c.status == FAIL  # setuid, but not to root
    c = d.check_newidmap(both, "apt-get", {**GOOD_PROBE, "idmap": "newuidmap refused"})
    assert c.status == FAIL and "newuidmap refused" in c.message
    assert d.check_newidmap([], None, None, root=True).status == OK


def test_overlay_and_fuse():
    assert d.check_overlay(GOOD_PROBE, "6.8.0").status == OK
    c = d.check_overlay({**GOOD_PROBE, "overlay": "Operation not permitted"}, "5.10.0-28")
    assert c.status == WARN and "5.11" in c.message and "Operation not permitted" in c.message
    c = d.check_overlay({"unshare": None, "nsmount": "Operation not permitted"}, "6.8.0")
    assert c.status == WARN and "not tried" in c.message

    bad_overlay = {**GOOD_PROBE, "overlay": "Invalid argument"}
    c = d.check_fuse(None, None, GOOD_PROBE, "apt-get")
    assert c.status == OK and "not needed" in c.message
    c = d.check_fuse(None, None, bad_overlay, "apt-get")
    assert c.status == WARN and c.fix == "sudo apt-get install fuse-overlayfs"
    c = d.check_fuse("/usr/bin/fuse-overlayfs", "/dev/fuse: Permission denied", bad_overlay,
                     None)
    assert c.status == WARN and "Permission denied" in c.message
    c = d.check_fuse("/usr/bin/fuse-overlayfs", None, {**bad_overlay, "fuse": "boom"}, None)
    assert c.status == WARN and "boom" in c.message
    assert d.check_fuse("/usr/bin/fuse-overlayfs", None, GOOD_PROBE, None).status == OK


def test_network_cgroups_space():
    assert d.check_tun(None).status == OK
    c = d.check_tun("/dev/net/tun: No such file or directory")
    assert c.status == WARN and "modprobe tun" in c.fix
    assert d.check_network_helpers("/usr/bin/pasta", None, "apt-get").status == OK
    assert d.check_network_helpers(None, "/usr/bin/slirp4netns", "apt-get").status == OK
    c = d.check_network_helpers(None, None, "apt-get")
    assert c.status == WARN and c.fix == "sudo apt-get install passt"
    c = d.check_cgroups("v1", "this host uses cgroup v1")
    assert c.status == WARN and "limits" in c.message and c.title == "cgroup v1"
    assert d.check_cgroups("v2", None).status == OK
    assert d.check_space("/s", 2 * d.GIB).status == OK
    c = d.check_space("/s", d.GIB - 1)
    assert c.status == WARN and "1024MiB" in c.message
    assert d.check_space("/s", None).status == WARN


def test_writable():
    c = d.check_writable("store", "store", "/h/u/.local/share/pbox", "/h/u/.local/share/pbox",
                         True, True, "u")
    assert c.status == OK and not c.fix
    c = d.check_writable("store", "store", "/h/u/pbox", "/h/u", True, True, "u")
    assert c.status == OK and "will be created in /h/u" in c.message
    c = d.check_writable("store", "store", "/srv/pbox", "/srv", False, True, "u")
    assert c.status == FAIL and c.fix == "sudo chown -R u /srv"
    c = d.check_writable("store", "store", "/srv/file", "/srv/file", False, False, "u")
    assert c.status == FAIL and "not a directory" in c.message
    c = d.check_writable("store", "store", "/s", "/s", True, True, "u", problem="too new")
    assert c.status == FAIL and "too new" in c.message


def test_exit_code_and_report():
    checks = [d.Check("a", "first", OK, "fine", "never shown"),
              d.Check("b", "second", WARN, "meh", "do this"),
              d.Check("c", "third", FAIL, "broken", "sudo fix it")]
    assert d.exit_code(checks) == 1
    assert d.exit_code(checks[:2]) == 0
    text = d.render_text(checks)
    assert text.splitlines() == [
        "[ok]   first: fine",
        "[warn] second: meh",
        "       fix: do this",
        "[fail] third: broken",
        "       fix: sudo fix it",
        "",
        "1 failed, 1 warning",
    ]
    assert d.render_text(checks[:1]).endswith("Everything rootless pbox needs is in place.\n")
    assert checks[2].to_dict() == {"Name": "c", "Title": "third", "Status": "fail",
                                   "Message": "broken", "Fix": "sudo fix it"}
