"""`volume create/ls/inspect/rm/prune`, volumes in `run`, and docker's copy-up of image
content into an empty volume, as the test user."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from harness import has_subuid

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def layers(registry_plain, test_images, run_pbox):
    """Five layers: /owned (uid 1000 files), /usr/local/bin (setuid/setgid), /hl (hard
    links), /srv/shared (2775 root:1000), /data/kept.txt ..."""
    ref = test_images(registry_plain).layers.reference
    run_pbox("pull", "-q", ref)
    return ref


def _names(run_pbox) -> list[str]:
    return run_pbox("volume", "ls", "-q").lines


def _inspect(run_pbox, name) -> dict:
    objs = json.loads(run_pbox("volume", "inspect", name).stdout)
    assert len(objs) == 1
    return objs[0]


def _cid(run_pbox, name) -> str:
    return run_pbox("inspect", "--type", "container", "--format", "{{.Id}}", name).stdout.strip()


def test_create_ls_inspect_rm(run_pbox):
    assert run_pbox("volume", "create", "data1", "--label", "team=a", "--label",
                    "flag").stdout == "data1\n"
    random_name = run_pbox("volume", "create").stdout.strip()
    assert HEX64.match(random_name)
    # creating an existing volume again is fine, as in docker
    assert run_pbox("volume", "create", "data1").stdout == "data1\n"

    r = run_pbox("volume", "ls")
    assert r.lines[0].split() == ["DRIVER", "VOLUME", "NAME"]
    rows = [line.split() for line in r.lines[1:]]
    assert rows == sorted([["local", "data1"], ["local", random_name]], key=lambda x: x[1])
    assert sorted(_names(run_pbox)) == sorted(["data1", random_name])
    assert run_pbox("volume", "ls", "-q", "--filter", "name=ata").lines == ["data1"]
    assert run_pbox("volume", "ls", "-q", "--filter", "label=team=a").lines == ["data1"]
    assert run_pbox("volume", "ls", "-q", "--filter", "label=flag").lines == ["data1"]
    assert run_pbox("volume", "ls", "-q", "--filter", "label=team=b").lines == []
    assert run_pbox("volume", "ls", "-q", "-f", "dangling=false").lines == []
    assert len(run_pbox("volume", "ls", "-q", "-f", "dangling=true").lines) == 2
    out = run_pbox("volume", "ls", "--filter", "name=data1", "--format",
                   "{{.Name}}|{{.Driver}}|{{.Scope}}|{{.Labels}}").stdout
    assert out == "data1|local|local|flag=,team=a\n"
    r = run_pbox("volume", "ls", "--filter", "color=red", check=False)
    assert r.returncode != 0 and "invalid filter 'color'" in r.stderr

    obj = _inspect(run_pbox, "data1")
    assert list(obj) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                         "Scope"]
    assert obj["Name"] == "data1" and obj["Driver"] == "local" and obj["Scope"] == "local"
    assert obj["Labels"] == {"team": "a", "flag": ""} and obj["Options"] == {}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", obj["CreatedAt"])
    assert os.path.isdir(obj["Mountpoint"])
    assert run_pbox("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "data1",
                    random_name).lines == ["data1 local", f"{random_name} local"]
    r = run_pbox("volume", "inspect", "nothere", expect_rc=1)
    assert r.stdout.strip() == "[]" and "No such volume: nothere" in r.stderr
    r = run_pbox("volume", "inspect", "data1", "nothere", expect_rc=1)
    assert [o["Name"] for o in json.loads(r.stdout)] == ["data1"]

    for bad, why in (("x", "too short"), ("bad/name", "invalid characters")):
        r = run_pbox("volume", "create", bad, check=False)
        assert r.returncode != 0 and why in r.stderr and "Traceback" not in r.stderr
    r = run_pbox("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "tv",
                 check=False)
    assert r.returncode != 0 and "not supported" in r.stderr
    assert "tv" not in _names(run_pbox)

    assert run_pbox("volume", "rm", "data1").stdout == "data1\n"
    assert not os.path.exists(obj["Mountpoint"])
    assert _names(run_pbox) == [random_name]
    r = run_pbox("volume", "rm", "data1", expect_rc=1)
    assert "No such volume: data1" in r.stderr
    run_pbox("volume", "rm", "-f", "data1")
    run_pbox("volume", "remove", random_name)
    assert _names(run_pbox) == []


def test_bind_volume_uses_the_host_directory(bb, run_pbox, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "from-host").write_text("host\n")
    run_pbox("volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
             f"device={host}", "hostdir")
    obj = _inspect(run_pbox, "hostdir")
    assert obj["Mountpoint"] == str(host)
    assert obj["Options"] == {"type": "none", "o": "bind", "device": str(host)}
    r = run_pbox("run", "--rm", "-v", "hostdir:/d", bb, "sh", "-c",
                 "cat /d/from-host; echo ctr > /d/from-ctr")
    assert r.stdout == "host\n"
    assert (host / "from-ctr").read_text() == "ctr\n"
    run_pbox("volume", "rm", "hostdir")
    assert (host / "from-ctr").exists()  # removing the volume keeps the host's files


def test_named_volume_persists_across_containers(bb, run_pbox):
    run_pbox("run", "--rm", "-v", "keep:/data", bb, "sh", "-c", "echo hello > /data/f")
    assert "keep" in _names(run_pbox)  # --rm removes anonymous volumes only
    assert run_pbox("run", "--rm", "-v", "keep:/other", bb, "cat",
                    "/other/f").stdout == "hello\n"
    r = run_pbox("run", "--rm", "--mount", "type=volume,source=keep,target=/m", bb, "sh", "-c",
                 "cat /m/f; echo more >> /m/f")
    assert r.stdout == "hello\n"
    assert run_pbox("run", "--rm", "-v", "keep:/data", bb, "cat",
                    "/data/f").stdout == "hello\nmore\n"


def test_readonly_volume(bb, run_pbox):
    run_pbox("run", "--rm", "-v", "rov:/data", bb, "sh", "-c", "echo v > /data/f")
    r = run_pbox("run", "--rm", "-v", "rov:/data:ro", bb, "sh", "-c",
                 "cat /data/f; echo x > /data/g", check=False)
    assert r.returncode not in (0, 125)
    assert r.stdout == "v\n" and "Read-only file system" in r.stderr
    r = run_pbox("run", "--rm", "--mount", "type=volume,src=rov,dst=/data,readonly", bb,
                 "touch", "/data/g", check=False)
    assert r.returncode not in (0, 125) and "Read-only file system" in r.stderr
    # the read-write mount still writes
    run_pbox("run", "--rm", "-v", "rov:/data", bb, "touch", "/data/g")


def test_rm_v_removes_anonymous_volumes_not_named(bb, run_pbox):
    run_pbox("run", "--name", "c1", "-v", "named1:/n", "-v", "/anon", bb, "sh", "-c",
             "echo a > /anon/f; echo n > /n/f")
    vols = _names(run_pbox)
    anon = [v for v in vols if v != "named1"]
    assert "named1" in vols and len(anon) == 1 and HEX64.match(anon[0])
    labels = _inspect(run_pbox, anon[0])["Labels"]
    assert labels == {"com.docker.volume.anonymous": ""}
    assert _inspect(run_pbox, "named1")["Labels"] == {}
    cid = _cid(run_pbox, "c1")
    assert run_pbox("volume", "ls", "-q", "-f", "dangling=false").lines == sorted(vols)

    # in use: docker's error names the container, exit 1, nothing removed
    r = run_pbox("volume", "rm", "named1", expect_rc=1)
    assert "volume is in use" in r.stderr and cid in r.stderr
    r = run_pbox("volume", "rm", "-f", anon[0], expect_rc=1)
    assert cid in r.stderr
    assert sorted(_names(run_pbox)) == sorted(vols)

    run_pbox("rm", "-v", "c1")
    assert _names(run_pbox) == ["named1"]
    # a container without -v leaves its anonymous volume behind; --rm removes it
    run_pbox("run", "--name", "c2", "-v", "/anon", bb, "true")
    run_pbox("rm", "c2")
    assert len(_names(run_pbox)) == 2
    before = set(_names(run_pbox))
    run_pbox("run", "--rm", "-v", "/anon", bb, "true")
    assert set(_names(run_pbox)) == before


def test_prune(bb, run_pbox):
    run_pbox("volume", "create", "keepme")
    unnamed = run_pbox("volume", "create").stdout.strip()  # random name, not anonymous
    run_pbox("run", "--name", "gone", "-v", "/a", bb, "sh", "-c",
             "head -c 1000 /dev/zero > /a/zeros")
    run_pbox("rm", "gone")
    run_pbox("run", "--name", "inuse", "-v", "/b", "-v", "usednamed:/c", bb, "true")
    inuse = set(_names(run_pbox)) - {"keepme", unnamed, "usednamed"}
    dangling_anon = {v for v in inuse
                     if v not in run_pbox("inspect", "--type", "container", "--format",
                                          "{{json .Mounts}}", "inuse").stdout}
    assert len(dangling_anon) == 1 and len(inuse) == 2
    everything = set(_names(run_pbox))

    # the prompt: no answer keeps everything
    r = run_pbox("volume", "prune", input="n\n")
    assert "anonymous local volumes not used by at least one container" in r.stdout
    assert set(_names(run_pbox)) == everything

    r = run_pbox("volume", "prune", "-f")
    (gone,) = dangling_anon
    assert r.stdout == f"Deleted Volumes:\n{gone}\n\nTotal reclaimed space: 1kB\n"
    assert set(_names(run_pbox)) == everything - dangling_anon

    r = run_pbox("volume", "prune", "-f", "--filter", "label=nope")
    assert r.stdout == "Total reclaimed space: 0B\n"

    r = run_pbox("volume", "prune", "-a", input="y\n")
    assert "all local volumes not used by at least one container" in r.stdout
    assert sorted(r.stdout.split("Deleted Volumes:\n")[1].split("\n\n")[0].split()) == \
        sorted(["keepme", unnamed])
    # what the container uses stays
    assert set(_names(run_pbox)) == everything - dangling_anon - {"keepme", unnamed}
    run_pbox("rm", "-v", "inuse")
    assert _names(run_pbox) == ["usednamed"]
    run_pbox("volume", "prune", "-af")
    assert _names(run_pbox) == []


# -- copy-up -------------------------------------------------------------------------------------


def _stat(run_pbox, bb, vol, paths) -> list[str]:
    """``%a %u %g %h %i %N`` of paths inside ``vol``, seen through an image that has nothing
    at the mount point (so what is seen is the volume's own content)."""
    args = " ".join(f"/v/{p}" for p in paths)
    return run_pbox("run", "--rm", "-v", f"{vol}:/v", bb, "sh", "-c",
                    f"stat -c '%a %u %g %h %i %N' {args}").lines


def test_copy_up_fills_an_empty_volume_keeping_owners_modes_links(bb, layers, run_pbox):
    owners = has_subuid()
    out = run_pbox("run", "--rm", "-v", "owned:/owned", layers, "cat",
                   "/owned/dir1000/inner.txt").stdout
    assert out == "inner\n"
    lines = _stat(run_pbox, bb, "owned", [".", "by1000.txt", "byroot.txt", "dir1000",
                                          "dir1000/inner.txt"])
    fields = [line.split()[:3] for line in lines]
    if owners:
        assert fields == [["755", "0", "0"], ["640", "1000", "1000"], ["600", "0", "0"],
                          ["750", "1000", "1000"], ["644", "1000", "1000"]]
    else:
        assert [f[0] for f in fields] == ["755", "640", "600", "750", "644"]

    # the volume's root takes the image directory's owner and mode (docker's copyOwnership)
    run_pbox("run", "--rm", "-v", "shared:/srv/shared", layers, "true")
    root = _stat(run_pbox, bb, "shared", ["."])[0].split()
    assert root[0] == "2775" and (not owners or root[1:3] == ["0", "1000"])

    # setuid/setgid bits survive the copy (chmod after chown)
    run_pbox("run", "--rm", "-v", "bins:/usr/local/bin", layers, "true")
    modes = {line.split()[-1].strip("'\""): line.split()[0]
             for line in _stat(run_pbox, bb, "bins", ["suid", "sgid", "hello"])}
    assert modes == {"/v/suid": "4755", "/v/sgid": "2755", "/v/hello": "755"}
    # and the copied executables run from the volume at their own place
    assert run_pbox("run", "--rm", "-v", "bins:/usr/local/bin", layers,
                    "hello").stdout == "hello from layer 5\n"

    # hard links stay one file; symlinks are copied as links, not followed
    run_pbox("run", "--rm", "-v", "hl:/hl", layers, "true")
    a, b = (line.split() for line in _stat(run_pbox, bb, "hl", ["original", "link"]))
    assert a[3] == b[3] == "2" and a[4] == b[4]
    run_pbox("run", "--rm", "-v", "binvol:/bin", bb, "true")
    links = _stat(run_pbox, layers, "binvol", ["sh", "ls"])
    assert all(line.split()[0] == "777" and "-> 'busybox'" in line for line in links), links

    # an anonymous volume and a read-only one are filled too
    assert run_pbox("run", "--rm", "-v", "/owned", layers, "cat",
                    "/owned/byroot.txt").stdout == "owned by root\n"
    assert run_pbox("run", "--rm", "-v", "rocopy:/data:ro", layers, "cat",
                    "/data/kept.txt").stdout == "kept\n"


def test_copy_up_only_into_an_empty_volume(bb, layers, run_pbox):
    run_pbox("run", "--rm", "-v", "mine:/data", bb, "sh", "-c", "echo mine > /data/own")
    assert run_pbox("run", "--rm", "-v", "mine:/data", layers, "ls",
                    "/data").stdout == "own\n"
    # nocopy, and an image without the path, leave the volume empty
    assert run_pbox("run", "--rm", "-v", "nc:/owned:nocopy", layers, "ls", "-A",
                    "/owned").stdout == ""
    assert run_pbox("run", "--rm", "-v", "nopath:/no/such/dir", layers, "ls", "-A",
                    "/no/such/dir").stdout == ""
    # once filled, the volume is what containers see, not the image
    run_pbox("run", "--rm", "-v", "filled:/data", layers, "rm", "/data/kept.txt")
    assert run_pbox("run", "--rm", "-v", "filled:/data", layers, "ls",
                    "/data").stdout == "overwritten.txt\n"


def test_copy_up_recovers_from_a_dead_copier(layers, run_pbox):
    run_pbox("volume", "create", "stale")
    mountpoint = _inspect(run_pbox, "stale")["Mountpoint"]
    junk = os.path.join(mountpoint, ".pbox-copyup", "half")
    os.makedirs(junk)
    r = run_pbox("run", "--rm", "-v", "stale:/data", layers, "ls", "-A", "/data")
    assert r.stdout == "kept.txt\noverwritten.txt\n"


def test_copy_up_by_two_containers_at_once(layers, run_pbox, pbox_cmd, pbox_root):
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    procs = [subprocess.Popen([*pbox_cmd, "run", "--rm", "-v", "race:/usr/local/bin", layers,
                               "ls", "/usr/local/bin"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out == "hello\nsgid\nsuid\n"
    mountpoint = _inspect(run_pbox, "race")["Mountpoint"]
    assert sorted(os.listdir(mountpoint)) == ["hello", "sgid", "suid"]
