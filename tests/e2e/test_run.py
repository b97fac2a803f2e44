"""run/create/start/stop/kill/restart/rm/ps/logs/wait/rename, as the test user."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from harness import has_subuid, imported_modules, modules_in

# Also run as a user without subordinate ids, and as root (see scripts/test.sh).
pytestmark = pytest.mark.idmap


def _wait_for(fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def test_run_output_and_exit_codes(bb, run_pbox):
    assert run_pbox("run", "--rm", bb, "echo", "hello").stdout == "hello\n"
    assert run_pbox("run", "--rm", bb, "sh", "-c", "exit 3", expect_rc=3).returncode == 3
    r = run_pbox("run", "--rm", bb, "no-such-cmd", expect_rc=127)
    assert r.stderr.startswith("Error: ") and "no-such-cmd" in r.stderr
    r = run_pbox("run", "--rm", bb, "/etc/passwd", expect_rc=126)
    assert r.stderr.startswith("Error: ")
    # killed by a signal: 128+N (sh as PID 1 has no handler, so kill it from a child)
    r = run_pbox("run", "--rm", "--init", bb, "sh", "-c", "kill -9 $$", expect_rc=137)
    r = run_pbox("run", "--rm", bb, "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert run_pbox("run", "--rm", bb, "sh", "-c", "echo $$").stdout == "1\n"


def test_run_pulls_missing_image(registry_plain, test_images, run_pbox):
    ref = test_images(registry_plain).busybox_docker.reference
    r = run_pbox("run", "--rm", ref, "true")
    assert f"Unable to find image '{ref}' locally" in r.stderr
    r = run_pbox("run", "--rm", "--pull", "never", "nothere/at:all", "true", expect_rc=125)
    assert "nothere/at:all" in r.stderr


def test_env_workdir_user_hostname_entrypoint(bb, run_pbox, tmp_path):
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nFROMFILE=yes\nOVER=file\n")
    out = run_pbox("run", "--rm", "-e", "A=1", "--env-file", str(envfile), "-e", "OVER=cli",
                   bb, "sh", "-c", "echo $A $FROMFILE $OVER $PATH",
                   env={"OVER": "host"}).stdout.split()
    assert out[:3] == ["1", "yes", "cli"] and "/bin" in out[3]
    r = run_pbox("run", "--rm", "-e", "HOSTVAR", bb, "sh", "-c", "echo $HOSTVAR",
                 env={"HOSTVAR": "from-host"})
    assert r.stdout == "from-host\n"
    assert run_pbox("run", "--rm", "-w", "/new/dir", bb, "pwd").stdout == "/new/dir\n"
    assert run_pbox("run", "--rm", "--hostname", "box1", bb, "hostname").stdout == "box1\n"
    out = run_pbox("run", "--rm", "--entrypoint", "echo", bb, "via", "entry").stdout
    assert out == "via entry\n"
    if has_subuid():
        assert run_pbox("run", "--rm", "-u", "1000:1000", bb, "sh", "-c",
                        "id -u; id -g").stdout == "1000\n1000\n"
        assert run_pbox("run", "--rm", "-u", "nobody", bb, "id", "-un").stdout == "nobody\n"
    r = run_pbox("run", "--rm", "--add-host", "db:10.1.2.3", bb, "cat", "/etc/hosts")
    assert re.search(r"10\.1\.2\.3\s+db", r.stdout)
    r = run_pbox("run", "--rm", "--dns", "10.9.9.9", bb, "cat", "/etc/resolv.conf")
    assert "nameserver 10.9.9.9" in r.stdout


def test_copy_on_write_isolation(bb, run_pbox):
    run_pbox("run", "--name", "w1", bb, "sh", "-c", "echo changed > /etc/motd; rm /bin/ls")
    # the image and another container of it are untouched
    r = run_pbox("run", "--rm", bb, "sh", "-c", "cat /etc/motd 2>/dev/null; ls / >/dev/null "
                 "&& echo ls-ok")
    assert "changed" not in r.stdout and "ls-ok" in r.stdout
    # the first container keeps its changes when started again
    run_pbox("start", "-a", "w1", check=False)
    run_pbox("rm", "w1")


def test_read_only_tmpfs_and_binds(bb, run_pbox, tmp_path):
    r = run_pbox("run", "--rm", "--read-only", bb, "touch", "/x", check=False)
    assert r.returncode != 0 and "Read-only" in r.stderr
    assert run_pbox("run", "--rm", "--read-only", "--tmpfs", "/scratch", bb, "sh", "-c",
                    "echo ok > /scratch/f && cat /scratch/f").stdout == "ok\n"
    host = tmp_path / "share"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    os.chmod(host, 0o777)
    out = run_pbox("run", "--rm", "-v", f"{host}:/data", bb, "sh", "-c",
                   "cat /data/in.txt; echo back > /data/out.txt").stdout
    assert out == "from host\n"
    assert (host / "out.txt").read_text() == "back\n"
    r = run_pbox("run", "--rm", "-v", f"{host}:/data:ro", bb, "touch", "/data/y", check=False)
    assert r.returncode != 0
    r = run_pbox("run", "--rm", "--mount", f"type=bind,source={host},target=/m,readonly", bb,
                 "cat", "/m/in.txt")
    assert r.stdout == "from host\n"
    r = run_pbox("run", "--rm", "-v", "/does/not/exist:/x", bb, "true", expect_rc=125)
    assert "does not exist" in r.stderr


def test_named_volume_persists(bb, run_pbox):
    run_pbox("run", "--rm", "-v", "vol1:/v", bb, "sh", "-c", "echo data > /v/f")
    assert run_pbox("run", "--rm", "-v", "vol1:/v", bb, "cat", "/v/f").stdout == "data\n"


def test_detached_lifecycle_ps_logs_stop_rm(bb, run_pbox):
    cid = run_pbox("run", "-d", "--name", "web", bb, "sh", "-c",
                   "echo started; echo problem >&2; trap 'echo bye; exit 0' TERM; "
                   "while true; do sleep 0.1; done").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    ps = run_pbox("ps").stdout.splitlines()
    assert re.match(r"CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES", ps[0])
    row = next(line for line in ps if line.startswith(cid[:12]))
    assert re.search(r"\bUp ", row) and row.rstrip().endswith("web")
    assert run_pbox("ps", "-q").stdout.split() == [cid[:12]]
    assert run_pbox("ps", "-q", "--no-trunc").stdout.split() == [cid]
    assert _wait_for(lambda: "started" in run_pbox("logs", "web").stdout)
    r = run_pbox("logs", "web")
    assert r.stdout == "started\n" and r.stderr == "problem\n"
    assert re.match(r"\d{4}-\d\d-\d\dT\S+Z started", run_pbox("logs", "-t", "web").stdout)

    info = json.loads(run_pbox("inspect", "web").stdout)[0]
    assert info["Id"] == cid and info["Name"] == "/web"
    assert info["State"]["Status"] == "running" and info["State"]["Running"] is True
    assert info["State"]["Pid"] > 0
    assert info["Config"]["Cmd"][0] == "sh"

    r = run_pbox("rm", "web", check=False)
    assert r.returncode != 0 and "running" in r.stderr
    assert run_pbox("stop", "web").stdout == "web\n"
    st = json.loads(run_pbox("inspect", "web").stdout)[0]["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 0
    assert "bye" in run_pbox("logs", "web").stdout
    assert re.search(r"Exited \(0\) ", run_pbox("ps", "-a").stdout)
    assert run_pbox("ps", "-q").stdout == ""
    assert run_pbox("wait", "web").stdout == "0\n"
    run_pbox("rm", "web")
    assert run_pbox("ps", "-aq").stdout == ""
    r = run_pbox("rm", "web", check=False)
    assert r.returncode == 1 and "No such container: web" in r.stderr


def test_stop_timeout_kills_and_kill_signal(bb, run_pbox):
    run_pbox("run", "-d", "--name", "stubborn", bb, "sleep", "1000")
    t0 = time.monotonic()
    run_pbox("stop", "-t", "1", "stubborn")
    assert time.monotonic() - t0 < 10
    assert run_pbox("inspect", "-f", "{{.State.ExitCode}}", "stubborn").stdout.strip() == "137"
    run_pbox("start", "stubborn")
    assert run_pbox("inspect", "-f", "{{.State.Status}}", "stubborn").stdout.strip() == "running"
    run_pbox("kill", "-s", "KILL", "stubborn")
    assert run_pbox("wait", "stubborn").stdout == "137\n"
    r = run_pbox("kill", "stubborn", check=False)
    assert r.returncode != 0 and "not running" in r.stderr
    run_pbox("rm", "-f", "stubborn")


def test_names_conflict_rename_and_create_start(bb, run_pbox):
    cid = run_pbox("create", "--name", "one", bb, "echo", "created-then-started").stdout.strip()
    assert run_pbox("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout == "one created\n"
    r = run_pbox("create", "--name", "one", bb, "true", expect_rc=125)
    assert '"/one" is already in use' in r.stderr
    run_pbox("rename", "one", "two")
    r = run_pbox("start", "-a", "two")
    assert r.stdout == "created-then-started\n"
    assert run_pbox("inspect", "-f", "{{.Name}}", cid).stdout.strip() == "/two"
    run_pbox("create", "--name", "one", bb, "true")  # the old name is free again
    run_pbox("rm", "two", "one")
    r = run_pbox("create", "--name", "bad name!", bb, "true", expect_rc=125)
    assert "Invalid container name" in r.stderr


def test_restart_policy_and_rm_flag(bb, run_pbox):
    run_pbox("run", "-d", "--name", "flaky", "--restart", "on-failure:2", bb, "sh", "-c",
             "echo run; exit 1")
    assert _wait_for(lambda: run_pbox("inspect", "-f", "{{.State.Status}}",
                                      "flaky").stdout.strip() == "exited")
    assert run_pbox("inspect", "-f", "{{.RestartCount}}", "flaky").stdout.strip() == "2"
    assert run_pbox("logs", "flaky").stdout == "run\n" * 3
    run_pbox("rm", "flaky")
    run_pbox("run", "-d", "--rm", "--name", "gone", bb, "true")
    assert _wait_for(lambda: run_pbox("ps", "-aq", "--filter", "name=gone").stdout == "")


def test_ps_filters_and_formats(bb, run_pbox):
    run_pbox("run", "--name", "ok0", "--label", "tier=a", bb, "true")
    run_pbox("run", "--name", "bad3", bb, "sh", "-c", "exit 3", expect_rc=3)
    q = lambda *f: run_pbox("ps", "-a", "--format", "{{.Names}}", *f).stdout.split()  # noqa: E731
    assert sorted(q()) == ["bad3", "ok0"]
    assert q("--filter", "exited=3") == ["bad3"]
    assert q("--filter", "label=tier=a") == ["ok0"]
    assert q("--filter", "status=exited", "--filter", "name=ok") == ["ok0"]
    assert run_pbox("ps", "-a", "-n", "1", "--format", "{{.Names}}").stdout == "bad3\n"
    assert run_pbox("ps", "-l", "--format", "{{.Names}}").stdout == "bad3\n"
    lines = run_pbox("ps", "-a", "--format", "json").stdout.splitlines()
    assert {json.loads(x)["Names"] for x in lines} == {"ok0", "bad3"}
    assert "virtual" in run_pbox("ps", "-a", "-s").stdout
    run_pbox("container", "prune", "-f")
    assert run_pbox("ps", "-aq").stdout == ""


def test_image_in_use_refused_by_rmi(bb, run_pbox):
    run_pbox("create", "--name", "user1", bb, "true")
    r = run_pbox("rmi", bb, check=False)
    assert r.returncode == 125 and "in use" in r.stderr
    run_pbox("rm", "user1")
    run_pbox("rmi", bb)


def test_network_none_has_only_lo(bb, run_pbox):
    out = run_pbox("run", "--rm", "--network", "none", bb, "ls", "/sys/class/net").stdout
    assert out.split() == ["lo"]


def test_capabilities_default_and_privileged(bb, run_pbox):
    eff = run_pbox("run", "--rm", bb, "sh", "-c", "grep CapEff /proc/self/status").stdout
    assert eff.split()[1] == "00000000a80425fb"
    out = run_pbox("run", "--rm", "--cap-drop", "ALL", bb, "sh", "-c",
                   "grep CapEff /proc/self/status").stdout
    assert out.split()[1] == "0000000000000000"
    out = run_pbox("run", "--rm", "--security-opt", "no-new-privileges", bb, "sh", "-c",
                   "grep NoNewPrivs /proc/self/status").stdout
    assert out.split()[1] == "1"


def test_limits_fail_clearly_without_cgroup_delegation(bb, run_pbox):
    r = run_pbox("run", "--rm", "--memory", "64m", bb, "true", check=False)
    assert r.returncode == 125 and r.stderr.startswith("Error: ") and "cgroup" in r.stderr


def test_volume_found_by_inspect_nocopy_mount_and_df(bb, run_pbox):
    run_pbox("run", "--rm", "--mount", "type=volume,source=nc1,target=/etc,volume-nocopy", bb,
             "true")
    assert run_pbox("inspect", "-f", "{{.Name}}", "nc1").stdout == "nc1\n"
    run_pbox("run", "--rm", "-v", "nc1:/data", bb, "sh", "-c", "test ! -e /data/passwd")
    df = run_pbox("system", "df").stdout
    assert re.search(r"Local Volumes\s+1\s+0\s+", df), df


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_storage_drivers_smoke(driver, bb, run_pbox):
    args = ["--storage-driver", driver]
    assert run_pbox(*args, "run", "--rm", bb, "echo", "hi").stdout == "hi\n"
    run_pbox(*args, "run", "--name", "drv", bb, "sh", "-c", "echo x > /new; rm /etc/passwd")
    assert run_pbox("inspect", "-f", "{{.Driver}}", "drv").stdout.strip() == driver
    r = run_pbox(*args, "run", "--rm", bb, "sh", "-c", "test -e /new || cat /etc/passwd")
    assert "root:" in r.stdout
    assert run_pbox(*args, "start", "-a", "drv", check=False).returncode != 0  # passwd gone
    run_pbox("rm", "drv")


def test_logs_tail_since_follow(bb, run_pbox, pbox_cmd, pbox_root):
    import subprocess

    run_pbox("run", "-d", "--name", "lg", bb, "sh", "-c",
             "for i in 1 2 3 4 5; do echo line$i; done; sleep 1.5; echo late; sleep 1000")
    assert _wait_for(lambda: "line5" in run_pbox("logs", "lg").stdout)
    assert run_pbox("logs", "--tail", "2", "lg").stdout == "line4\nline5\n"
    assert run_pbox("logs", "--tail", "0", "lg").stdout == ""
    assert run_pbox("logs", "--since", "1h", "lg").stdout.startswith("line1")
    assert run_pbox("logs", "--until", "2000-01-01T00:00:00Z", "lg").stdout == ""
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    p = subprocess.Popen([*pbox_cmd, "logs", "-f", "lg"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: "late" in run_pbox("logs", "lg").stdout)
    run_pbox("stop", "-t", "0", "lg")
    out, _ = p.communicate(timeout=30)
    assert out.splitlines() == ["line1", "line2", "line3", "line4", "line5", "late"]
    run_pbox("rm", "lg")


def test_run_interactive_tty(bb, pbox_cmd, pbox_root):
    import pty
    import select
    import subprocess

    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    master, slave = pty.openpty()
    p = subprocess.Popen([*pbox_cmd, "run", "--rm", "-it", bb, "sh"], stdin=slave,
                         stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""

    def read_until(token: bytes, timeout=30):
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    return
    read_until(b"# ")
    os.write(master, b"tty; echo $((6*7))\n")
    read_until(b"42")
    os.write(master, b"exit 5\n")
    read_until(b"never", timeout=3)
    assert p.wait(timeout=30) == 5
    assert b"/dev/pts/" in out and b"42" in out


def test_containers_of_other_uids_can_be_stopped_and_share_one_namespace(bb, run_pbox,
                                                                         pbox_root):
    """Every pbox command joins the user's one namespace (the pause process), so a
    container process of uid 1000 (another host uid) can still be signalled."""
    if not has_subuid():
        pytest.skip("needs a subordinate id range")
    run_pbox("run", "-d", "--name", "u1000", "-u", "1000", bb, "sleep", "1000")
    run_pbox("run", "-d", "--name", "u0", bb, "sleep", "1000")
    pids = [json.loads(run_pbox("inspect", n).stdout)[0]["State"]["Pid"] for n in ("u1000", "u0")]
    if os.getuid() != 0:  # root needs no user namespace and has no pause process
        with open(os.path.join(pbox_root.runroot, "pause.pid")) as f:
            pause = int(f.read())
        ns = {os.readlink(f"/proc/{p}/ns/user") for p in pids + [pause]}
        assert len(ns) == 1
    run_pbox("stop", "-t", "0", "u1000")
    assert run_pbox("inspect", "-f", "{{.State.Status}}", "u1000").stdout == "exited\n"
    run_pbox("rm", "-f", "u1000", "u0")


def test_a_working_directory_that_cannot_be_made_is_named_as_inside(bb, run_pbox,
                                                                    pbox_root):
    r = run_pbox("run", "--rm", "-w", "/proc/nope/deeper", bb, "true", expect_rc=125)
    assert "/proc/nope" in r.stderr and pbox_root.root not in r.stderr, r.stderr


def test_rm_of_files_that_other_ids_own(bb, run_pbox, pbox_root):
    """rm joins the user's namespace only when it needs to: here for a directory the
    container gave to uid 1000 (a host uid the user may not delete as such)."""
    if not has_subuid():
        pytest.skip("needs a subordinate id range")
    run_pbox("run", "--name", "owned", bb, "sh", "-c",
             "mkdir -p /d/e && touch /d/e/f && chown -R 1000:1000 /d")
    run_pbox("stop", "-t", "1", "owned")  # not running: nothing to do
    assert run_pbox("rm", "owned").stdout == "owned\n"
    assert run_pbox("ps", "-aq").stdout == ""
    for sub in ("containers", "tmp"):
        left = [n for n in os.listdir(os.path.join(pbox_root.root, sub)) if n != ".names"]
        assert left == [], (sub, left)


def test_group_add_by_name_from_the_image(bb, run_pbox, tmp_path):
    # Names come from the image's /etc/group, the topmost layer that has it.
    (tmp_path / "Dockerfile").write_text(
        f"FROM {bb}\nRUN echo 'devs:x:4242:' >> /etc/group && echo 'ops:x:4343:' >> /etc/group\n")
    run_pbox("build", "-q", "-t", "groups:1", str(tmp_path))
    if has_subuid():
        out = run_pbox("run", "--rm", "--group-add", "devs", "--group-add", "17",
                       "--group-add", "ops", "groups:1", "id", "-G").stdout.split()
        assert {"4242", "17", "4343"} <= set(out), out
    r = run_pbox("run", "--rm", "--group-add", "nosuchgroup", "groups:1", "true",
                 expect_rc=125)
    assert r.stderr == ("Error: unable to find group nosuchgroup: no matching entries in "
                        "group file\n")
    assert run_pbox("ps", "-aq").stdout == ""
    # a group the image deleted is gone, although a lower layer has it
    (tmp_path / "Dockerfile").write_text("FROM groups:1\nRUN rm /etc/group\n")
    run_pbox("build", "-q", "-t", "groups:2", str(tmp_path))
    run_pbox("run", "--rm", "--group-add", "devs", "groups:2", "true", expect_rc=125)


def test_the_command_starts_with_default_signal_dispositions(bb, run_pbox):
    # Python (pbox) ignores SIGPIPE and SIGXFSZ; an exec'd command must not inherit that
    # (`yes | head` ends by SIGPIPE as anywhere else), with --init too.
    for extra in ([], ["--init"]):
        out = run_pbox("run", "--rm", *extra, bb, "grep", "-E", "^Sig(Ign|Blk)",
                       "/proc/self/status").stdout
        assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


@pytest.mark.parametrize("network", ["none", "default"])
def test_a_plain_run_imports_no_click_and_no_compression(bb, pbox_cmd, pbox_root, run_pbox,
                                                         network):
    # The first run makes the pause process (with subuid ranges); the next takes the
    # short path of pbox.commands.fast, which never loads click.  The default network
    # (pasta) looks for its program and makes a temp dir without shutil or tempfile.
    run_pbox("run", "--rm", "--network", network, bb, "true")
    env = pbox_root.env_with({"PYTHONPROFILEIMPORTTIME": "1"})
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
    r = subprocess.run([*pbox_cmd, "run", "--rm", "--network", network, bb, "true"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    modules = modules_in(r.stderr)
    assert "pbox.containers.create" in modules  # the measurement saw the run
    heavy = ["gzip", "zstandard", "requests", "urllib3", "pbox.oci.registry", "shutil",
             "tempfile", "zlib"]  # (zlib: a .pyz runs unpacked, zipimport stays idle)
    for name in heavy:
        assert name not in modules, name
    assert "click" not in modules


def test_container_commands_import_neither_re_nor_enum(bb, pbox_cmd, pbox_root):
    """`run` and the lifecycle commands start containers without ``re`` (names, sizes
    and signals are checked by hand, with ``_signal``) and, but for a network's socket
    code (pasta's address, once pasta is started), without ``enum``: ~3-4 ms each."""
    env = pbox_root.env_with(None)
    alone = imported_modules(pbox_cmd, env, "run", "--rm", "--network", "none", bb, "true")
    assert "pbox.rootless.launcher" in alone  # the measurement saw the container start
    netted = imported_modules(pbox_cmd, env, "run", "--rm", bb, "true")
    imported_modules(pbox_cmd, env, "run", "-d", "--name", "imports", bb, "sleep", "100")
    stopped = imported_modules(pbox_cmd, env, "stop", "-t", "0", "imports")
    removed = imported_modules(pbox_cmd, env, "rm", "imports")
    for modules in (alone, netted, stopped, removed):
        for name in ("re", "signal", "dataclasses", "typing"):
            assert name not in modules, name
    for modules in (alone, stopped, removed):
        for name in ("enum", "socket", "selectors"):
            assert name not in modules, name
