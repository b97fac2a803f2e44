"""cp, diff, commit and export, as the test user."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time

import pytest
from harness import has_subuid

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def containers(run_pbox):
    """Names to `rm -f` at the end of the test."""
    names: list[str] = []
    yield names
    for name in names:
        run_pbox("rm", "-f", name, check=False)


@pytest.fixture
def pbox_stdout(pbox_cmd, pbox_root):
    """``pbox_stdout(*args)``: pbox's stdout as bytes (a tar of binaries is not text)."""

    def run(*args) -> bytes:
        env = pbox_root.env_with(None)
        if pbox_cmd[1:2] == ["-m"]:
            env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([*pbox_cmd, *(str(a) for a in args)], env=env, timeout=300,
                              capture_output=True, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout

    return run


def _wait_for(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def _tar(entries) -> bytes:
    """A tar from (name, data or None for a directory, uid) tuples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, uid in entries:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(stdout: str) -> dict:
    """name -> TarInfo of a tar printed on stdout (the test files are ASCII: lossless)."""
    with tarfile.open(fileobj=io.BytesIO(stdout.encode()), mode="r:") as tf:
        return {m.name: m for m in tf.getmembers()}


def _cat_out(run_pbox, src: str) -> str:
    """A file's text, copied out of a container through a tar on stdout."""
    with tarfile.open(fileobj=io.BytesIO(run_pbox("cp", src, "-").stdout.encode())) as tf:
        member = next(m for m in tf.getmembers() if m.isfile())
        return tf.extractfile(member).read().decode()


CHANGES = ("echo new > /added.txt; echo more >> /etc/passwd; rm /etc/group; "
           "mkdir -p /newdir/sub; touch /newdir/sub/f; rm -r /home/user; chmod 700 /var")


# -- diff --------------------------------------------------------------------------------------


def test_diff_lists_added_changed_deleted(bb, run_pbox, containers):
    containers += ["df1", "df2"]
    run_pbox("run", "--name", "df1", bb, "sh", "-c", CHANGES)
    assert run_pbox("diff", "df1").stdout.splitlines() == [
        "A /added.txt",
        "C /etc",
        "D /etc/group",
        "C /etc/passwd",
        "C /home",
        "D /home/user",
        "A /newdir",
        "A /newdir/sub",
        "A /newdir/sub/f",
        "C /var",
    ]
    assert run_pbox("container", "diff", "df1").stdout.startswith("A /added.txt\n")
    # the runtime's own mount points (/etc/hosts...) are no change of the container's
    run_pbox("run", "--name", "df2", bb, "true")
    assert run_pbox("diff", "df2").stdout == ""
    # a replaced directory: what it hid is deleted, what it holds is new
    run_pbox("rm", "df2")
    run_pbox("run", "--name", "df2", bb, "sh", "-c",
             "rm -r /var; mkdir -p /var/www; echo x > /var/www/index.html")
    assert run_pbox("diff", "df2").stdout.splitlines() == [
        "C /var", "D /var/spool", "C /var/www", "A /var/www/index.html"]
    r = run_pbox("diff", "nosuchctr", expect_rc=1)
    assert "No such container: nosuchctr" in r.stderr


# -- commit -------------------------------------------------------------------------------------


def test_commit_makes_an_image_with_the_changes(bb, run_pbox, containers):
    containers += ["cm1", "cm2", "other"]
    run_pbox("run", "--name", "cm1", bb, "sh", "-c", CHANGES)
    run_pbox("create", "--name", "other", bb, "sh", "-c", "cat /etc/group /added.txt")
    image_id = run_pbox("commit", "-a", "Jane <jane@example.com>", "-m", "my changes",
                        "--change", 'CMD ["echo","hi"]', "cm1", "mine/app:v1").stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71

    assert run_pbox("run", "--rm", "mine/app:v1").stdout == "hi\n"
    out = run_pbox("run", "--rm", "mine/app:v1", "sh", "-c",
                   "cat /added.txt; tail -n 1 /etc/passwd; ls /newdir/sub; "
                   "test -e /etc/group || echo no-group; test -e /home/user || echo no-user; "
                   "stat -c %a /var; test -e /etc/hosts && echo hosts-mounted").stdout
    assert out.split() == ["new", "more", "f", "no-group", "no-user", "700", "hosts-mounted"]

    info = json.loads(run_pbox("image", "inspect", "mine/app:v1").stdout)[0]
    base = json.loads(run_pbox("image", "inspect", bb).stdout)[0]
    assert info["Id"] == image_id
    assert info["Config"]["Cmd"] == ["echo", "hi"]
    assert info["Author"] == "Jane <jane@example.com>" and info["Comment"] == "my changes"
    assert info["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
    assert len(info["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1

    hist = run_pbox("history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}|"
                    "{{.Comment}}", "mine/app:v1").stdout.splitlines()
    top = hist[0].split("|")
    assert top[0] == image_id and top[1].startswith("sh -c echo new > /added.txt")
    assert top[2] != "0B" and top[3] == "my changes"
    assert len(hist) == len(run_pbox("history", "-q", bb).stdout.splitlines()) + 1

    # copy-on-write: the image and another container of it are untouched
    r = run_pbox("start", "-a", "other", check=False)
    assert "root:x:0:" in r.stdout and "No such file" in r.stderr
    assert run_pbox("diff", "other").stdout == ""
    r = run_pbox("run", "--rm", bb, "sh", "-c", "test -e /added.txt || echo clean; "
                 "grep -c more /etc/passwd; true")
    assert r.stdout.split() == ["clean", "0"]

    # the same changes committed again share the layer; no changes: an empty layer
    again = json.loads(run_pbox("image", "inspect", run_pbox(
        "commit", "-m", "again", "cm1").stdout.strip()).stdout)[0]
    assert again["RootFS"]["Layers"] == info["RootFS"]["Layers"] and again["Id"] != image_id
    run_pbox("run", "--name", "cm2", "mine/app:v1", "true")
    empty = run_pbox("commit", "cm2").stdout.strip()
    assert json.loads(run_pbox("image", "inspect", empty).stdout)[0]["RootFS"]["Layers"] == \
        info["RootFS"]["Layers"]
    sizes = run_pbox("history", "--format", "{{.Size}}", empty).stdout.splitlines()
    assert sizes[0] == "0B" and len(sizes) == len(hist) + 1


def test_commit_changes_and_a_running_container(bb, run_pbox, containers):
    containers += ["cr1"]
    run_pbox("run", "-d", "--name", "cr1", "-e", "FROMRUN=1", bb, "sh", "-c",
             "echo live > /live.txt; echo ready; sleep 1000")
    assert _wait_for(lambda: "ready" in run_pbox("logs", "cr1").stdout)
    changes = ['ENV A=1 B="two words"', "ENV C ${A}-x", "WORKDIR /srv", "WORKDIR app",
               "LABEL com.example.k=v", "EXPOSE 8080 53/udp", "USER nobody",
               'ENTRYPOINT ["/bin/sh", "-c"]', "STOPSIGNAL SIGINT", "VOLUME /data"]
    args = [a for c in changes for a in ("-c", c)]
    run_pbox("commit", *args, "cr1", "mine/live")
    cfg = json.loads(run_pbox("image", "inspect", "mine/live").stdout)[0]["Config"]
    assert {"A=1", "B=two words", "C=1-x", "FROMRUN=1"} <= set(cfg["Env"])
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "nobody"
    assert cfg["Labels"]["com.example.k"] == "v"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["Cmd"] is None
    assert cfg["StopSignal"] == "SIGINT" and cfg["Volumes"] == {"/data": {}}
    out = run_pbox("run", "--rm", "-u", "0", "--entrypoint", "cat", "mine/live",
                   "/live.txt").stdout
    assert out == "live\n"
    for pause in ("-p", "--pause=false"):  # docker's flag, accepted (nothing is paused)
        assert run_pbox("commit", pause, "cr1").stdout.startswith("sha256:")
    r = run_pbox("commit", "-c", "RUN echo no", "cr1", expect_rc=1)
    assert "RUN is not a valid change command" in r.stderr
    r = run_pbox("commit", "cr1", "Bad:Name:x", check=False)
    assert r.returncode != 0 and r.stderr.startswith("Error: ")


def test_committed_image_pushes_and_pulls_back(bb, registry_plain, run_pbox, containers):
    containers += ["pp1"]
    run_pbox("run", "--name", "pp1", bb, "sh", "-c", CHANGES)
    name = f"{registry_plain.host}/pbox-test/committed:1"
    run_pbox("commit", "-c", "CMD cat /added.txt", "pp1", name)
    before = json.loads(run_pbox("image", "inspect", name).stdout)[0]
    run_pbox("push", name)
    run_pbox("rm", "pp1")
    containers.clear()
    run_pbox("rmi", name)
    run_pbox("pull", "-q", name)
    after = json.loads(run_pbox("image", "inspect", name).stdout)[0]
    # the layer tar a push writes is the one the commit hashed: the same diff id
    assert after["RootFS"]["Layers"][-1] == before["RootFS"]["Layers"][-1]
    assert run_pbox("run", "--rm", name).stdout == "new\n"


# -- cp -----------------------------------------------------------------------------------------


@pytest.fixture
def host_tree(tmp_path):
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "file.txt").write_text("hello\n")
    (src / "dir" / "a.txt").write_text("A\n")
    (src / "dir" / "sub" / "b.txt").write_text("B\n")
    os.symlink("file.txt", src / "link")
    return src


def test_cp_into_and_out_of_a_stopped_container(bb, run_pbox, containers, host_tree, tmp_path):
    containers += ["cp1"]
    run_pbox("create", "--name", "cp1", bb, "sh", "-c", "cat /tmp/file.txt")
    # host -> container: a file into a directory, a file to a new name, a directory
    run_pbox("cp", host_tree / "file.txt", "cp1:/tmp")
    run_pbox("cp", host_tree / "file.txt", "cp1:/etc/renamed.txt")
    run_pbox("cp", host_tree / "dir", "cp1:/opt")            # /opt is new: it is the copy
    run_pbox("cp", host_tree / "dir", "cp1:/home")           # /home exists: /home/dir
    run_pbox("cp", f"{host_tree / 'dir'}/.", "cp1:/root")     # only the contents
    run_pbox("cp", host_tree / "link", "cp1:/tmp/")          # the symlink itself
    run_pbox("cp", "-L", host_tree / "link", "cp1:/tmp/followed")
    run_pbox("cp", host_tree / "file.txt", "cp1:etc/passwd")  # over a file; '/' optional
    assert run_pbox("start", "-a", "cp1").stdout == "hello\n"
    diff = run_pbox("diff", "cp1").stdout.splitlines()
    for line in ["A /tmp/file.txt", "A /etc/renamed.txt", "C /etc/passwd", "A /opt",
                 "A /opt/sub/b.txt", "A /home/dir/sub/b.txt", "A /root/a.txt",
                 "A /root/sub/b.txt", "A /tmp/link", "A /tmp/followed"]:
        assert line in diff
    assert not any(p in diff for p in ("A /opt/dir", "A /root/dir"))

    # container -> host, and tars on stdout (ownership: the container's root)
    out = tmp_path / "out"
    out.mkdir()
    run_pbox("cp", "cp1:/opt", out / "opt")
    run_pbox("cp", "cp1:/home/dir", out)
    run_pbox("cp", "cp1:/tmp/link", out)
    run_pbox("cp", "cp1:/etc/passwd", out / "passwd.copy")
    assert (out / "opt" / "sub" / "b.txt").read_text() == "B\n"
    assert (out / "dir" / "a.txt").read_text() == "A\n"
    assert os.readlink(out / "link") == "file.txt"
    assert (out / "passwd.copy").read_text() == "hello\n"
    assert (out / "passwd.copy").stat().st_uid == os.getuid()
    members = _members(run_pbox("cp", "cp1:/home/dir", "-").stdout)
    assert set(members) == {"dir", "dir/a.txt", "dir/sub", "dir/sub/b.txt"}
    assert all((m.uid, m.gid) == (0, 0) for m in members.values())
    assert members["dir/a.txt"].mode == 0o644

    # tar on stdin: extracted into a directory, owners root unless -a
    run_pbox("cp", "-", "cp1:/srv", expect_rc=1)  # no /srv in the image
    run_pbox("cp", "-", "cp1:/var", input=_tar([("t", None, 1234), ("t/x", b"x\n", 1234)]))
    members = _members(run_pbox("cp", "cp1:/var/t", "-").stdout)
    assert (members["t/x"].uid, members["t/x"].gid) == (0, 0)
    if has_subuid():
        run_pbox("cp", "-a", "-", "cp1:/var", input=_tar([("u", b"u\n", 1234)]))
        assert _members(run_pbox("cp", "cp1:/var/u", "-").stdout)["u"].uid == 1234

    # docker's error cases
    r = run_pbox("cp", "cp1:/nothere", out, expect_rc=1)
    assert "Could not find the file /nothere in container cp1" in r.stderr
    r = run_pbox("cp", host_tree / "dir", "cp1:/etc/passwd", expect_rc=1)
    assert "cannot copy a directory to a file" in r.stderr
    r = run_pbox("cp", host_tree / "file.txt", "cp1:/no/such/dir/x", expect_rc=1)
    assert "no such directory" in r.stderr
    r = run_pbox("cp", host_tree / "file.txt", "cp1:/newdir/", expect_rc=1)
    assert "does not exist" in r.stderr
    r = run_pbox("cp", host_tree / "file.txt", out / "x", check=False)
    assert r.returncode != 0 and "container" in r.stderr
    r = run_pbox("cp", "nosuchctr:/x", out, expect_rc=1)
    assert "No such container: nosuchctr" in r.stderr
    r = run_pbox("cp", "-", "cp1:/var", input=b"not a tar at all" * 64, expect_rc=1)
    assert r.stderr.startswith("Error: ")


def test_cp_with_a_running_container(bb, run_pbox, containers, host_tree, tmp_path):
    containers += ["cp2"]
    run_pbox("run", "-d", "--name", "cp2", bb, "sh", "-c",
             "echo made > /tmp/made.txt; echo ready; i=0; "
             "while [ ! -f /tmp/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
             "cat /tmp/go /srv/sub/b.txt")
    assert _wait_for(lambda: "ready" in run_pbox("logs", "cp2").stdout)
    # out: what the running container wrote; in: it sees the files at once
    run_pbox("cp", "cp2:/tmp/made.txt", tmp_path / "made.txt")
    assert (tmp_path / "made.txt").read_text() == "made\n"
    run_pbox("cp", host_tree / "dir", "cp2:/srv")
    run_pbox("cp", host_tree / "file.txt", "cp2:/tmp/go")
    assert run_pbox("wait", "cp2").stdout.strip() == "0"
    assert run_pbox("logs", "cp2").stdout == "ready\nhello\nB\n"
    assert _cat_out(run_pbox, "cp2:/srv/a.txt") == "A\n"  # and stopped again


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_cp_cannot_escape_through_symlinks(bb, run_pbox, containers, host_tree, tmp_path,
                                           running):
    name = "esc-run" if running else "esc-stop"
    containers.append(name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret\n")
    script = (f"ln -s / /rootlink; ln -s ../../../../.. /up; ln -s {outside} /hostdir; "
              f"echo inside > /tmp/secret.txt; echo ready")
    if running:
        run_pbox("run", "-d", "--name", name, bb, "sh", "-c", script + "; sleep 1000")
        assert _wait_for(lambda: "ready" in run_pbox("logs", name).stdout)
    else:
        run_pbox("run", "--name", name, bb, "sh", "-c", script)
    # reading: links resolve inside the container
    assert _cat_out(run_pbox, f"{name}:/up/tmp/secret.txt") == "inside\n"
    assert _cat_out(run_pbox, f"{name}:/rootlink/etc/passwd").startswith("root:x:0:0:")
    r = run_pbox("cp", f"{name}:/hostdir/secret.txt", tmp_path / "got", expect_rc=1)
    assert not (tmp_path / "got").exists()
    # writing: into the container's /tmp, never the host's directories
    marker = f"pbox-escape-{os.getpid()}-{name}"
    run_pbox("cp", host_tree / "file.txt", f"{name}:/up/tmp/{marker}")
    run_pbox("cp", host_tree / "file.txt", f"{name}:/rootlink/tmp/{marker}.2")
    assert not os.path.exists(f"/tmp/{marker}") and not os.path.exists(f"/tmp/{marker}.2")
    assert _cat_out(run_pbox, f"{name}:/tmp/{marker}") == "hello\n"
    r = run_pbox("cp", host_tree / "file.txt", f"{name}:/hostdir/pwned", expect_rc=1)
    assert not (outside / "pwned").exists()
    # a tar naming .. or going through a symlink is refused
    r = run_pbox("cp", "-", f"{name}:/tmp", input=_tar([("../../x.txt", b"x", 0)]),
                 expect_rc=1)
    assert "outside" in r.stderr
    run_pbox("cp", "-", f"{name}:/", input=_tar([("rootlink/tmp/y.txt", b"y", 0)]),
             expect_rc=1)
    # a symlink copied out stays a symlink on the host
    run_pbox("cp", f"{name}:/hostdir", tmp_path / "hostdir-copy")
    assert os.readlink(tmp_path / "hostdir-copy") == str(outside)
    assert sorted(os.listdir(outside)) == ["secret.txt"]


# -- export -------------------------------------------------------------------------------------


def test_export(bb, run_pbox, containers, tmp_path, pbox_stdout):
    containers += ["ex1"]
    run_pbox("run", "--name", "ex1", bb, "sh", "-c", CHANGES)
    out = tmp_path / "ex1.tar"
    run_pbox("export", "-o", out, "ex1")
    with tarfile.open(out) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert tf.extractfile("added.txt").read() == b"new\n"
        assert tf.extractfile("etc/passwd").read().endswith(b"more\n")
    for name in ("bin/busybox", "bin/sh", "newdir/sub/f", "etc", "home", "var"):
        assert name in members
    for gone in ("etc/group", "home/user"):
        assert gone not in members
    assert not any(n.startswith(".wh.") or "/.wh." in n for n in members)
    assert members["bin/sh"].issym() and stat_mode(members["var"]) == 0o700
    # the owners seen in the container, not on the host
    assert (members["added.txt"].uid, members["etc/passwd"].gid) == (0, 0)
    # to stdout as well, and `container export`
    with tarfile.open(fileobj=io.BytesIO(pbox_stdout("container", "export", "ex1"))) as tf:
        assert {m.name for m in tf.getmembers()} == set(members)
    r = run_pbox("export", "nosuchctr", expect_rc=1)
    assert "No such container" in r.stderr


def stat_mode(member) -> int:
    return member.mode & 0o7777


# -- every storage driver -------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_all_commands_with_each_storage_driver(driver, bb, run_pbox, containers, host_tree,
                                               tmp_path):
    containers += ["drv", "drv-run"]
    args = ["--storage-driver", driver]
    run_pbox(*args, "run", "--name", "drv", bb, "sh", "-c", CHANGES)
    assert run_pbox("inspect", "-f", "{{.Driver}}", "drv").stdout.strip() == driver
    assert run_pbox("diff", "drv").stdout.splitlines() == [
        "A /added.txt", "C /etc", "D /etc/group", "C /etc/passwd", "C /home", "D /home/user",
        "A /newdir", "A /newdir/sub", "A /newdir/sub/f", "C /var"]
    # cp mounts the stopped container with its own driver
    run_pbox(*args, "cp", host_tree / "dir", "drv:/srv")
    assert _cat_out(run_pbox, "drv:/srv/sub/b.txt") == "B\n"
    run_pbox("commit", "drv", f"mine/{driver}")
    out = run_pbox("run", "--rm", f"mine/{driver}", "sh", "-c",
                   "cat /added.txt /srv/a.txt; test -e /etc/group || echo no-group").stdout
    assert out.split() == ["new", "A", "no-group"]
    export = tmp_path / "drv.tar"
    run_pbox("export", "-o", export, "drv")
    with tarfile.open(export) as tf:
        names = set(tf.getnames())
    assert {"added.txt", "srv/sub/b.txt", "newdir/sub/f"} <= names
    assert "etc/group" not in names and "home/user" not in names
    # and a running one is reached through its own mounts
    run_pbox(*args, "run", "-d", "--name", "drv-run", bb, "sh", "-c",
             "i=0; while [ ! -f /tmp/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
             "cat /tmp/go")
    run_pbox("cp", host_tree / "file.txt", "drv-run:/tmp/go")
    assert run_pbox("wait", "drv-run").stdout.strip() == "0"
    assert run_pbox("logs", "drv-run").stdout == "hello\n"


def test_concurrent_copies_into_a_stopped_container(bb, run_pbox, containers, host_tree,
                                                    pbox_cmd, pbox_root):
    containers += ["cc1"]
    run_pbox("create", "--name", "cc1", bb, "true")
    env = pbox_root.env_with(None)
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([*pbox_cmd, "cp", str(host_tree / "dir"), f"cc1:/opt{i}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert all(rc == 0 for rc, _ in results), results
    diff = run_pbox("diff", "cc1").stdout.splitlines()
    assert all(f"A /opt{i}/sub/b.txt" in diff for i in range(4))
