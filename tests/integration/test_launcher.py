"""The container launcher against the real kernel, with a busybox root filesystem.

Meant to run as an unprivileged user with a /etc/subuid range, as one without (only
uid 0 exists in the container then), and as root; tests that need a particular kind
of user skip otherwise.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import pbox
from pbox import record
from pbox.errors import CommandNotExecutable, CommandNotFound, RuntimeFailure
from pbox.rootless import caps, idmap, launcher, userns
from pbox.rootless.spec import ContainerSpec, MountSpec, ProcessSpec, RootfsSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(pbox.__file__)))
BUSYBOX = shutil.which("busybox")
MAPPING = userns.current_mapping()
DEFAULT_CAPS = caps.to_mask(caps.DEFAULT)


def _static(path):
    if not path:
        return False
    out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout
    return "statically linked" in out or "static-pie" in out


pytestmark = pytest.mark.skipif(not _static(BUSYBOX), reason="needs a static busybox")

subuid_only = pytest.mark.skipif(
    MAPPING.mode != idmap.MODE_SUBUID, reason="needs a user with a /etc/subuid range"
)
single_only = pytest.mark.skipif(
    MAPPING.mode != idmap.MODE_SINGLE, reason="needs a user without a /etc/subuid range"
)
many_ids = pytest.mark.skipif(
    MAPPING.mode == idmap.MODE_SINGLE, reason="needs more than one mapped id"
)

FUSE = shutil.which("fuse-overlayfs") is not None and os.access("/dev/fuse", os.R_OK | os.W_OK)
DRIVERS = [
    "overlay",
    pytest.param(
        "fuse-overlayfs",
        marks=pytest.mark.skipif(not FUSE, reason="fuse-overlayfs or /dev/fuse missing"),
    ),
    "vfs",
]


# -- building root filesystems ----------------------------------------------------------------


def make_busybox_root(d):
    """bin/busybox with a link per applet, /etc/passwd with root and user 1000."""
    os.makedirs(os.path.join(d, "bin"))
    shutil.copy(BUSYBOX, os.path.join(d, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(d, "bin", a))
    etc = os.path.join(d, "etc")
    os.makedirs(etc)
    with open(os.path.join(etc, "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
    with open(os.path.join(etc, "group"), "w") as f:
        f.write("root:x:0:\nuser:x:1000:\nextra:x:2000:user\n")
    with open(os.path.join(etc, "motd"), "w") as f:
        f.write("base\n")
    with open(os.path.join(etc, "hidden"), "w") as f:
        f.write("should be whited out\n")
    with open(os.path.join(d, "bin", "notexec"), "w") as f:
        f.write("#!/bin/sh\necho no\n")
    os.chmod(os.path.join(d, "bin", "notexec"), 0o644)
    os.makedirs(os.path.join(d, "opq"))
    with open(os.path.join(d, "opq", "old"), "w") as f:
        f.write("old\n")
    os.makedirs(os.path.join(d, "data"))
    os.chmod(os.path.join(d, "data"), 0o1777)
    os.makedirs(os.path.join(d, "tmp"))
    os.chmod(os.path.join(d, "tmp"), 0o1777)


def make_top_layer(d):
    """A layer in overlay form: a new file, a whiteout, an opaque directory."""
    os.makedirs(os.path.join(d, "etc"))
    with open(os.path.join(d, "etc", "top"), "w") as f:
        f.write("top\n")
    os.mknod(os.path.join(d, "etc", "hidden"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.makedirs(os.path.join(d, "opq"))
    os.setxattr(os.path.join(d, "opq"), "user.overlay.opaque", b"y")
    with open(os.path.join(d, "opq", "new"), "w") as f:
        f.write("new\n")


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    base = tmp_path_factory.mktemp("layers")
    bottom, top = str(base / "bottom"), str(base / "top")
    make_busybox_root(bottom)
    os.makedirs(top)
    make_top_layer(top)
    return [top, bottom]


@pytest.fixture(scope="module")
def plain_root(tmp_path_factory):
    """A busybox directory used as it is (bound, no copy-on-write): mount points the
    tests need get created in it."""
    d = str(tmp_path_factory.mktemp("plain") / "root")
    make_busybox_root(d)
    return d


@pytest.fixture(scope="module")
def _container_dirs():
    """Containers leave files owned by subordinate ids (and overlay's mode-0 work dirs)
    that only the user namespace can delete: remove the tests' files from inside it."""
    dirs: list[str] = []
    yield dirs
    dirs = [d for d in dirs if os.path.exists(d)]
    if not MAPPING.needs_userns or not dirs:
        return
    code = (
        "import shutil, sys\n"
        "from pbox.rootless import userns\n"
        "userns.become_root()\n"
        "for d in sys.argv[1:]:\n"
        "    shutil.rmtree(d, ignore_errors=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop(userns.ENV_MARKER, None)
    subprocess.run([sys.executable, "-c", code, *dirs], env=env, check=True)


@pytest.fixture(autouse=True)
def _collect_tmp(tmp_path, _container_dirs):
    _container_dirs.append(str(tmp_path))


def rootfs(tmp_path, layers, driver=""):
    c = tmp_path / "ctr"
    return RootfsSpec(
        lowerdirs=list(layers),
        upperdir=str(c / "upper"),
        workdir=str(c / "work"),
        path=str(c / "merged"),
        driver=driver,
    )


def make_spec(rootfs_spec, args, **kw):
    proc_kw = {k: kw.pop(k) for k in list(kw) if k in record.names(ProcessSpec)}
    return ContainerSpec(
        id="0123456789abcdef", rootfs=rootfs_spec, process=ProcessSpec(args=args, **proc_kw), **kw
    )


class Result:
    def __init__(self, code, out, err, container):
        self.code, self.out, self.err, self.container = code, out, err, container


def run(spec, stdin=b""):
    """Launch, feed stdin, wait; stdout/stderr through files (no pipes to deadlock on)."""
    import tempfile

    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as inp,
    ):
        inp.write(stdin)
        inp.seek(0)
        c = launcher.launch(spec, stdin=inp, stdout=out, stderr=err)
        code = c.wait()
        out.seek(0)
        err.seek(0)
        return Result(code, out.read().decode(), err.read().decode(), c)


def sh(spec_root, script, **kw):
    return run(make_spec(spec_root, ["sh", "-c", script], **kw))


def gone(pid, deadline=30.0):
    """True once ``pid`` has exited (a zombie nobody reaped yet counts as gone)."""
    end = time.monotonic() + deadline
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


# -- basics ----------------------------------------------------------------------------------


def test_echo_hello(plain_root):
    r = run(make_spec(RootfsSpec([plain_root]), ["echo", "hello"]))
    assert (r.code, r.out) == (0, "hello\n"), r.err
    assert r.container.driver == "bind"


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_passes_through(plain_root, code):
    assert sh(RootfsSpec([plain_root]), f"exit {code}").code == code


def test_missing_command_is_127(plain_root):
    with pytest.raises(CommandNotFound) as e:
        run(make_spec(RootfsSpec([plain_root]), ["nosuchcommand", "x"]))
    assert e.value.exit_code == 127
    assert "executable file `nosuchcommand` not found in $PATH" in str(e.value)
    with pytest.raises(CommandNotFound):
        run(make_spec(RootfsSpec([plain_root]), ["/bin/nosuchfile"]))


def test_not_executable_is_126(plain_root):
    for args in (["/bin/notexec"], ["notexec"]):
        with pytest.raises(CommandNotExecutable) as e:
            run(make_spec(RootfsSpec([plain_root]), args))
        assert e.value.exit_code == 126
        assert "Permission denied" in str(e.value)
    with pytest.raises(CommandNotExecutable):
        run(make_spec(RootfsSpec([plain_root]), ["/etc"]))


def test_killed_by_signal_is_128_plus_n(plain_root):
    # As PID 1 a process cannot SIGKILL itself (the kernel protects a namespace's init),
    # so the command runs under --init here, and also gets killed from outside below.
    r = sh(RootfsSpec([plain_root]), "kill -9 $$; sleep 5", init=True)
    assert r.code == 128 + signal.SIGKILL
    c = launcher.launch(make_spec(RootfsSpec([plain_root]), ["sleep", "100"]))
    c.kill(signal.SIGKILL)
    assert c.wait() == 128 + signal.SIGKILL


def test_sigterm_reaches_a_handler_in_pid1(plain_root, tmp_path):
    ready = tmp_path / "ready"
    ready.mkdir(mode=0o777)
    spec = make_spec(
        RootfsSpec([plain_root]),
        ["sh", "-c", "trap 'exit 7' TERM; touch /r/up; while :; do sleep 0.05; done"],
        mounts=[MountSpec("bind", "/r", str(ready))],
    )
    c = launcher.launch(spec)
    end = time.monotonic() + 30
    while not (ready / "up").exists() and time.monotonic() < end:
        time.sleep(0.02)
    c.kill(signal.SIGTERM)
    assert c.wait() == 7


def test_pid_is_1_and_hostname(plain_root):
    r = sh(RootfsSpec([plain_root]), "echo $$; hostname; echo $HOSTNAME", hostname="pboxhost")
    assert r.out.split() == ["1", "pboxhost", "pboxhost"], r.err


def test_default_hostname_is_the_short_id(plain_root):
    assert sh(RootfsSpec([plain_root]), "hostname").out.strip() == "0123456789ab"


def test_env_cwd_and_stdin(plain_root):
    r = run(
        make_spec(
            RootfsSpec([plain_root]),
            ["sh", "-c", 'echo "$FOO $PATH $HOME"; pwd; cat'],
            env=["FOO=bar"],
            cwd="/work/dir",
        ),
        stdin=b"from stdin\n",
    )
    lines = r.out.splitlines()
    assert lines[0] == "bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /root"
    assert lines[1:] == ["/work/dir", "from stdin"], r.err


def test_tty_stdio_becomes_controlling_terminal(plain_root):
    master, slave = pty.openpty()
    try:
        spec = make_spec(
            RootfsSpec([plain_root]), ["sh", "-c", "test -t 0 && test -t 1 && echo tty"], tty=True
        )
        c = launcher.launch(spec, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        slave = -1
        assert c.wait() == 0
        out = b""
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO once no process holds the slave
                break
            if not chunk:
                break
            out += chunk
        assert b"tty" in out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_missing_rootfs_is_a_setup_error(tmp_path):
    with pytest.raises(RuntimeFailure) as e:
        run(make_spec(RootfsSpec([str(tmp_path / "absent")]), ["true"]))
    assert e.value.exit_code == 125
    assert "root filesystem" in str(e.value)


# -- users and capabilities ------------------------------------------------------------------


def _caps(text):
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith("Cap")
    }


def test_root_gets_dockers_default_capabilities(plain_root):
    r = sh(RootfsSpec([plain_root]), "grep ^Cap /proc/self/status")
    got = _caps(r.out)
    assert got["CapEff"] == DEFAULT_CAPS
    assert got["CapBnd"] == DEFAULT_CAPS
    assert got["CapPrm"] == DEFAULT_CAPS
    assert got["CapInh"] == 0 and got["CapAmb"] == 0


def test_capability_list_is_honoured(plain_root):
    want = caps.resolve(add=["NET_ADMIN"], drop=["CHOWN", "MKNOD"])
    r = sh(RootfsSpec([plain_root]), "grep ^Cap /proc/self/status", capabilities=want)
    assert _caps(r.out)["CapEff"] == caps.to_mask(want)
    r = sh(
        RootfsSpec([plain_root]),
        "grep ^Cap /proc/self/status",
        capabilities=caps.resolve(privileged=True),
    )
    if MAPPING.needs_userns:
        # a new user namespace starts with every capability, whatever our bounding set
        with open("/proc/sys/kernel/cap_last_cap") as f:
            want = (1 << (int(f.read()) + 1)) - 1
    else:
        with open("/proc/self/status") as f:
            want = _caps(f.read())["CapBnd"]  # real root cannot exceed its bounding set
    assert _caps(r.out)["CapEff"] == want


def test_no_new_privs(plain_root):
    r = sh(RootfsSpec([plain_root]), "grep NoNewPrivs /proc/self/status", no_new_privs=True)
    assert r.out.split() == ["NoNewPrivs:", "1"]


@many_ids
def test_user_1000_files_map_to_subordinate_ids(tmp_path, layers):
    rs = rootfs(tmp_path, layers)
    r = sh(
        rs,
        "id -u; id -g; id -G; touch /data/mine; grep ^CapEff /proc/self/status",
        uid=1000,
        gid=1000,
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert _caps(lines[3])["CapEff"] == 0
    st = os.stat(os.path.join(rs.upperdir, "data", "mine"))
    assert (st.st_uid, st.st_gid) == (MAPPING.to_host_uid(1000), MAPPING.to_host_gid(1000))
    if MAPPING.mode == idmap.MODE_SUBUID:
        assert st.st_uid == MAPPING.uid_ranges[1].host + 999


@many_ids
def test_user_by_name_gets_groups_and_home(plain_root):
    r = sh(RootfsSpec([plain_root]), "id -u; id -G; echo $HOME", user="user")
    assert r.out.splitlines() == ["1000", "1000 2000", "/home/user"], r.err


def test_unknown_user_is_a_setup_error(plain_root):
    with pytest.raises(RuntimeFailure) as e:
        sh(RootfsSpec([plain_root]), "true", user="nobody-here")
    assert "unable to find user nobody-here" in str(e.value)


@single_only
def test_single_mapping_refuses_other_uids_clearly(plain_root):
    with pytest.raises(RuntimeFailure) as e:
        sh(RootfsSpec([plain_root]), "true", uid=1000, gid=1000)
    assert "subordinate id range" in str(e.value)
    with pytest.raises(RuntimeFailure) as e:
        sh(RootfsSpec([plain_root]), "true", user="user")
    assert "subordinate id range" in str(e.value)


def test_root_in_many_groups_runs(tmp_path):
    root = str(tmp_path / "root")
    make_busybox_root(root)
    with open(os.path.join(root, "etc", "group"), "a") as f:
        f.write("bin:x:1:root,bin\nwheel:x:10:root\nhuge:x:4000000:root\n")
    r = sh(RootfsSpec([root]), "id -u")
    assert (r.code, r.out) == (0, "0\n"), r.err


# -- root filesystem drivers -----------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_smoke(tmp_path, layers, driver):
    rs = rootfs(tmp_path, layers, driver)
    r = sh(
        rs,
        "echo hello; cat /etc/top /opq/new; ls /opq; test -e /etc/hidden || echo hidden-gone; "
        "echo changed > /etc/motd; cat /etc/motd",
    )
    assert r.code == 0, r.err
    assert r.container.driver == driver
    assert r.out.splitlines() == ["hello", "top", "new", "new", "hidden-gone", "changed"]
    # lower layers untouched
    with open(os.path.join(layers[1], "etc", "motd")) as f:
        assert f.read() == "base\n"
    if driver == "vfs":
        written = os.path.join(rs.path, "etc", "motd")
    else:
        written = os.path.join(rs.upperdir, "etc", "motd")
    with open(written) as f:
        assert f.read() == "changed\n"
    for pid in r.container.helper_pids:
        assert gone(pid), f"fuse-overlayfs {pid} left running"


@pytest.mark.parametrize("driver", DRIVERS)
def test_writes_survive_a_restart(tmp_path, layers, driver):
    rs = rootfs(tmp_path, layers, driver)
    assert sh(rs, "echo kept > /data/f").code == 0
    assert sh(rs, "cat /data/f").out == "kept\n"


def test_auto_driver_prefers_native_overlay(tmp_path, layers):
    r = sh(rootfs(tmp_path, layers), "true")
    assert r.container.driver in ("overlay", "fuse-overlayfs", "vfs")
    # this kernel is expected to allow overlay in a user namespace (>= 5.11)
    assert r.container.driver == "overlay"


def test_many_long_layer_paths_fit_the_mount_data_page(tmp_path, layers):
    deep = tmp_path / ("l" * 100)
    lowers = []
    for i in range(60):
        d = deep / (f"{i:03d}-" + "x" * 120)
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        lowers.append(str(d))
    lowers.append(layers[1])
    assert len(":".join(lowers)) > 4096
    rs = RootfsSpec(
        lowerdirs=lowers,
        upperdir=str(tmp_path / "c" / "upper"),
        workdir=str(tmp_path / "c" / "work"),
        path=str(tmp_path / "c" / "merged"),
        driver="overlay",
    )
    r = sh(rs, "cat /f0 /f59")
    assert (r.code, r.out) == (0, "059"), r.err


def test_layer_path_with_comma_and_colon(tmp_path, layers):
    odd = tmp_path / "a,b:c"
    odd.mkdir()
    (odd / "odd").write_text("odd\n")
    rs = RootfsSpec(
        lowerdirs=[str(odd), layers[1]],
        upperdir=str(tmp_path / "u,1"),
        workdir=str(tmp_path / "w"),
        path=str(tmp_path / "m"),
        driver="overlay",
    )
    r = sh(rs, "cat /odd")
    assert (r.code, r.out) == (0, "odd\n"), r.err


def test_readonly_rootfs(tmp_path, layers):
    rs = rootfs(tmp_path, layers)
    rs.readonly = True
    r = sh(rs, "touch /x 2>&1; echo ok > /tmp/y 2>&1; echo ok > /dev/shm/z && echo shm")
    assert "Read-only file system" in r.out
    assert r.out.strip().endswith("shm")


# -- what the container sees -----------------------------------------------------------------


def test_masked_and_readonly_paths(plain_root):
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    assert masked, "no maskable file exists on this kernel"
    script = "; ".join(f"wc -c < {p}" for p in masked)
    script += "; echo 1 > /proc/sys/kernel/hostname 2>/dev/null || echo ro; grep ' /proc/sys ' /proc/mounts"
    r = sh(RootfsSpec([plain_root]), script)
    lines = r.out.splitlines()
    assert lines[: len(masked)] == ["0"] * len(masked), r.err
    assert lines[len(masked)] == "ro"
    assert " ro," in lines[len(masked) + 1]


def test_dev_contents(plain_root):
    r = sh(
        RootfsSpec([plain_root]),
        "ls /dev | sort | tr '\\n' ' '; echo; echo x > /dev/null && head -c 4 /dev/zero | wc -c; "
        "readlink /dev/ptmx; grep -c devpts /proc/mounts",
    )
    lines = r.out.splitlines()
    for name in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"):
        assert name in lines[0].split(), lines[0]
    assert lines[1:] == ["4", "pts/ptmx", "1"]


def test_network_none_has_only_lo(plain_root):
    r = sh(RootfsSpec([plain_root]), "ls /sys/class/net; ip -o link", network="none")
    assert r.out.split()[0] == "lo"
    links = [line for line in r.out.splitlines()[1:] if line.strip()]
    assert len(links) == 1 and "lo:" in links[0] and "UP" in links[0]


def test_network_host_sees_host_links(plain_root):
    r = sh(RootfsSpec([plain_root]), "ls /sys/class/net", network="host")
    assert sorted(r.out.split()) == sorted(os.listdir("/sys/class/net"))


def test_container_is_out_of_the_callers_process_group(plain_root):
    c = launcher.launch(make_spec(RootfsSpec([plain_root]), ["sleep", "100"]))
    try:
        assert os.getpgid(c.holder_pid) != os.getpgrp()
        assert os.getsid(c.pid) == c.pid  # its own session, as a terminal needs
    finally:
        c.kill(signal.SIGKILL)
        c.wait()


def test_on_created_sees_the_container_namespaces(plain_root):
    seen = {}

    def hook(pid):
        seen["net"] = os.stat(f"/proc/{pid}/ns/net").st_ino

    c = launcher.launch(make_spec(RootfsSpec([plain_root]), ["sleep", "100"]), on_created=hook)
    try:
        assert seen["net"] == os.stat(c.ns_path("net")).st_ino
        assert seen["net"] != os.stat("/proc/self/ns/net").st_ino
    finally:
        c.kill(signal.SIGKILL)
        c.wait()


def test_bind_mounts_rw_ro_and_tmpfs(plain_root, tmp_path):
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir(mode=0o777)
    ro.mkdir()
    (ro / "f").write_text("readonly\n")
    single = tmp_path / "single.txt"
    single.write_text("one file\n")
    r = sh(
        RootfsSpec([plain_root]),
        "echo written > /mnt/rw/out; cat /mnt/ro/f; touch /mnt/ro/g 2>&1; cat /etc/one; "
        "grep ' /scratch ' /proc/mounts; echo t > /scratch/t && cat /scratch/t",
        mounts=[
            MountSpec("bind", "/mnt/rw", str(rw)),
            MountSpec("bind", "/mnt/ro", str(ro), ["ro"]),
            MountSpec("bind", "/etc/one", str(single), ["ro"]),
            MountSpec("tmpfs", "/scratch", options=["size=1m", "mode=1777"]),
        ],
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "readonly"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "one file"
    assert lines[3].startswith("tmpfs /scratch tmpfs") and "size=1024k" in lines[3]
    assert lines[4] == "t"
    assert (rw / "out").read_text() == "written\n"
    assert not (ro / "g").exists()


def test_etc_files_are_bound(plain_root, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.1 other\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\n")
    hn = tmp_path / "hostname"
    hn.write_text("named\n")
    r = sh(
        RootfsSpec([plain_root]),
        "cat /etc/hosts /etc/resolv.conf /etc/hostname",
        hosts_file=str(hosts),
        resolv_conf=str(resolv),
        hostname_file=str(hn),
    )
    assert r.out == hosts.read_text() + resolv.read_text() + "named\n"


def test_symlink_in_image_cannot_redirect_a_mount_outside(tmp_path, layers):
    top = tmp_path / "evil"
    (top / "etc").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(str(victim), str(top / "etc" / "escape"))
    hosts = tmp_path / "hosts"
    hosts.write_text("1.2.3.4 x\n")
    rs = RootfsSpec(
        [str(top), layers[1]],
        upperdir=str(tmp_path / "c" / "u"),
        workdir=str(tmp_path / "c" / "w"),
        path=str(tmp_path / "c" / "m"),
    )
    r = sh(rs, "cat /etc/escape/hosts", mounts=[MountSpec("bind", "/etc/escape/hosts", str(hosts))])
    assert r.out == "1.2.3.4 x\n", r.err
    assert os.listdir(victim) == []


# -- cleanup ---------------------------------------------------------------------------------


def _fuse_pids():
    """Live (not zombie) fuse-overlayfs processes of ours."""
    return {
        pid
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
        if _comm(pid) == "fuse-overlayfs" and not gone(pid, deadline=0)
    }


def _comm(pid):
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _host_mounts():
    with open("/proc/self/mounts") as f:
        return f.read()


@pytest.mark.parametrize("driver", DRIVERS)
def test_nothing_left_behind(tmp_path, layers, driver):
    mounts_before = _host_mounts()
    fuse_before = _fuse_pids()
    spec = make_spec(
        rootfs(tmp_path, layers, driver),
        ["sh", "-c", "sleep 100 & sleep 100 & echo started"],
        init=True,
    )
    r = run(spec)
    assert r.code == 0 and r.out == "started\n", r.err
    assert gone(r.container.pid)
    for pid in r.container.helper_pids:
        assert gone(pid)
    assert _fuse_pids() - fuse_before == set()
    assert _host_mounts() == mounts_before


@pytest.mark.parametrize("driver", DRIVERS)
def test_killing_the_holder_stops_everything(tmp_path, layers, driver):
    fuse_before = _fuse_pids()
    c = launcher.launch(make_spec(rootfs(tmp_path, layers, driver), ["sleep", "100"]))
    os.kill(c.holder_pid, signal.SIGKILL)
    assert c.wait() == 128 + signal.SIGKILL
    assert gone(c.pid)
    for pid in c.helper_pids:
        assert gone(pid), "fuse-overlayfs outlived its holder"
    assert _fuse_pids() - fuse_before == set()


def test_container_dies_with_the_caller(plain_root, tmp_path):
    pidfile = tmp_path / "pid"
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from pbox.rootless import launcher
        from pbox.rootless.spec import ContainerSpec, ProcessSpec, RootfsSpec
        c = launcher.launch(ContainerSpec("dies", RootfsSpec([{plain_root!r}]), ProcessSpec(["sleep", "100"])))
        with open({str(pidfile)!r}, "w") as f:
            f.write(f"{{c.pid}} {{c.holder_pid}}\\n")
        time.sleep(100)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if pidfile.exists() and pidfile.read_text().endswith("\n"):
                break
            time.sleep(0.02)
        pid, holder = map(int, pidfile.read_text().split())
        assert not gone(pid, deadline=0)
    finally:
        p.kill()
        p.wait()
    assert gone(holder)
    assert gone(pid)
