"""images, inspect, history, tag, rmi, image prune, system df, version, info."""

from __future__ import annotations

import json
import re

import pytest
from harness import storeview


@pytest.fixture
def pulled(registry_plain, test_images, run_pbox):
    imgs = test_images(registry_plain)
    run_pbox("pull", "-q", imgs.busybox.reference)
    run_pbox("pull", "-q", imgs.layers.reference)
    return imgs


def test_images_table_and_quiet(pulled, run_pbox):
    out = run_pbox("images").stdout.splitlines()
    assert re.match(r"REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$", out[0])
    bb = pulled.busybox
    row = next(line for line in out if line.startswith(f"{bb.host}/{bb.repository} "))
    cols = re.split(r"\s{2,}", row)
    assert cols[1] == "latest"
    assert cols[2] == bb.config_digest[7:19]
    assert re.match(r"\d+(\.\d+)?[kM]?B$", cols[-1])

    q = run_pbox("images", "-q").stdout.split()
    assert set(q) == {bb.config_digest[7:19], pulled.layers.config_digest[7:19]}
    q = run_pbox("images", "-q", "--no-trunc").stdout.split()
    assert bb.config_digest in q

    d = run_pbox("images", "--digests").stdout
    assert bb.manifest_digest in d


def test_images_format_json_and_filters(pulled, run_pbox):
    lines = run_pbox("images", "--format", "json").stdout.splitlines()
    objs = [json.loads(x) for x in lines]
    assert {o["Tag"] for o in objs} == {"latest"}
    tpl = run_pbox("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    bb = pulled.busybox
    assert f"{bb.host}/{bb.repository}:latest" in tpl
    table = run_pbox("images", "--format", "table {{.ID}}\t{{.Tag}}").stdout.splitlines()
    assert re.match(r"IMAGE ID\s+TAG$", table[0])
    ref = run_pbox("images", "--filter", "reference=*/pbox-test/busybox", "-q").stdout.split()
    assert ref == [bb.config_digest[7:19]]
    assert run_pbox("images", "--filter", "dangling=true", "-q").stdout == ""
    by_name = run_pbox("images", "-q", f"{bb.host}/{bb.repository}").stdout.split()
    assert by_name == [bb.config_digest[7:19]]
    r = run_pbox("images", "--filter", "nonsense=1", check=False)
    assert r.returncode == 125 and r.stderr.startswith("Error: ")
    r = run_pbox("images", "--format", "{{.Nope", check=False)
    assert r.returncode == 125 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr


def test_inspect_shape_and_format(pulled, run_pbox):
    bb = pulled.busybox
    data = json.loads(run_pbox("image", "inspect", bb.reference).stdout)
    obj = data[0]
    for key in ("Id", "RepoTags", "RepoDigests", "Created", "Config", "Architecture", "Os",
                "Size", "RootFS", "GraphDriver", "Metadata"):
        assert key in obj, key
    assert obj["RepoTags"] == [bb.reference]
    assert obj["Config"]["Cmd"] == bb.config["config"]["Cmd"]
    assert obj["Config"]["Env"] == bb.config["config"]["Env"]
    out = run_pbox("inspect", "--format", "{{.Id}} {{.Config.Cmd}} {{json .RootFS.Layers}}",
                   bb.reference).stdout.strip()
    cmd = "[" + " ".join(bb.config["config"]["Cmd"]) + "]"
    assert out == f"{bb.config_digest} {cmd} {json.dumps(bb.diff_ids, separators=(',', ':'))}"
    # by short id, by id with sha256:, by digest reference
    for name in (bb.config_digest[7:19], bb.config_digest, bb.by_digest):
        assert run_pbox("inspect", "-f", "{{.Id}}", name).stdout.strip() == bb.config_digest
    r = run_pbox("inspect", "nope/nothing:here", check=False)
    assert r.returncode != 0 and "nope/nothing:here" in r.stderr
    assert r.stdout.strip() == "[]"


def test_history(pulled, run_pbox):
    img = pulled.layers
    out = run_pbox("history", img.reference).stdout.splitlines()
    assert re.match(r"IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT", out[0])
    hist = img.config.get("history") or []
    assert len(out) - 1 == len(hist)
    assert out[1].startswith(img.config_digest[7:19])
    q = run_pbox("history", "-q", "--no-trunc", img.reference).stdout.split()
    assert q[0] == img.config_digest
    fmt = run_pbox("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                   img.reference).stdout.splitlines()
    assert fmt == [h.get("created_by", "") for h in reversed(hist)]


def test_tag_and_rmi(pulled, run_pbox, pbox_root):
    bb = pulled.busybox
    run_pbox("tag", bb.reference, "me/app:1")
    run_pbox("tag", bb.config_digest[7:19], "localhost:5000/other")
    out = run_pbox("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "me/app:1" in out and "localhost:5000/other:latest" in out
    data = json.loads(run_pbox("inspect", "me/app:1").stdout)[0]
    assert "me/app:1" in data["RepoTags"] and data["Id"] == bb.config_digest

    # removing one of several names only untags
    r = run_pbox("rmi", "me/app:1")
    assert r.stdout.strip() == "Untagged: me/app:1"
    # by id with several names: refused without -f
    r = run_pbox("rmi", bb.config_digest[7:19], check=False)
    assert r.returncode == 125 and "must be forced" in r.stderr
    r = run_pbox("rmi", "-f", bb.config_digest[7:19])
    assert f"Deleted: {bb.config_digest}" in r.stdout
    assert bb.config_digest[7:19] not in run_pbox("images", "-q").stdout
    # its layer is gone from the store; the other image's layers stay
    root = pbox_root.root
    remaining = set(storeview.image_record(root, pulled.layers.config_digest)["layers"])
    import os

    on_disk = {"sha256:" + n for n in os.listdir(os.path.join(root, "layers"))}
    assert on_disk == remaining
    # and so are its config and manifest blobs; the other image's stay
    blobs = {"sha256:" + n for n in os.listdir(os.path.join(root, "blobs", "sha256"))}
    assert bb.config_digest not in blobs and bb.manifest_digest not in blobs
    assert pulled.layers.config_digest in blobs and pulled.layers.manifest_digest in blobs

    r = run_pbox("rmi", "no/such:image", check=False)
    assert r.returncode == 125 and "no/such:image" in r.stderr
    r = run_pbox("tag", "no/such:image", "x:1", check=False)
    assert r.returncode == 125
    r = run_pbox("tag", pulled.layers.reference, "Bad/Name", check=False)
    assert r.returncode == 125 and "invalid reference format" in r.stderr


def test_prune_dangling_and_all(registry_plain, test_images, run_pbox):
    imgs = test_images(registry_plain)
    # an image pulled by digest only has no tag: dangling
    run_pbox("pull", "-q", imgs.uncompressed.by_digest)
    run_pbox("pull", "-q", imgs.busybox.reference)
    r = run_pbox("image", "prune", "-f")
    assert imgs.uncompressed.config_digest in r.stdout
    assert "Total reclaimed space:" in r.stdout
    assert run_pbox("images", "-q", "--no-trunc").stdout.split() == [imgs.busybox.config_digest]
    run_pbox("image", "prune", "-a", "-f")
    assert run_pbox("images", "-q").stdout == ""


def test_system_df_version_info(pulled, run_pbox):
    df = run_pbox("system", "df").stdout.splitlines()
    assert re.match(r"TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE", df[0])
    assert re.match(r"Images\s+2\s+0\s+", df[1])
    v = run_pbox("version", "--format", "{{.Client.Version}}").stdout.strip()
    from pbox import __version__

    assert v == __version__
    assert run_pbox("--version").stdout.strip() == f"pbox version {__version__}"
    info = json.loads(run_pbox("info", "--format", "json").stdout)
    assert info["Images"] == 2
    assert info["Rootless"] == (__import__("os").getuid() != 0)


def test_help_everywhere_and_bad_usage(run_pbox):
    for cmd in (["--help"], ["pull", "--help"], ["images", "--help"], ["image", "--help"],
                ["image", "ls", "--help"], ["inspect", "--help"], ["system", "df", "--help"],
                ["rmi", "-h"]):
        r = run_pbox(*cmd)
        assert r.stdout.startswith("Usage: pbox"), cmd
    for cmd, word in ((["frobnicate"], "frobnicate"), (["images", "--bogus"], "--bogus"),
                      (["pull"], "IMAGE"), (["--log-level", "loud", "images"], "loud")):
        r = run_pbox(*cmd, check=False)
        assert r.returncode == 125, cmd
        assert r.stderr.startswith("Error: ") and word in r.stderr, cmd
        assert "Traceback" not in r.stderr


def _both_paths(run_pbox, root, *args):
    """``args`` through the short path (`pbox --root R ...`) and through click
    (`pbox --root=R ...`, a form the short path leaves to click): their results, and
    whether each imported click.  Listings say "Up N seconds": a pair that differs
    is run again, three times at most, in case a second passed between the two."""
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    for _ in range(4):
        fast = run_pbox("--root", root, *args, env=env, check=False)
        slow = run_pbox(f"--root={root}", *args, env=env, check=False)
        if (fast.stdout, fast.returncode) == (slow.stdout, slow.returncode):
            break
    return fast, slow


def _seconds_apart(a: str, b: str) -> bool:
    """The two outputs differ only in a count of seconds (and the columns' padding):
    "Up 1 second" and "Up 2 seconds" are such a pair."""
    def norm(s):
        return re.sub(r"\s+", " ", re.sub(r"\b(\d+ seconds?|Less than a second)\b",
                                          "N seconds", s))
    return a != b and norm(a) == norm(b)


def _imported(stderr: str, module: str) -> bool:
    return any(line.startswith("import time:") and line.split("|")[-1].strip() == module
               for line in stderr.splitlines())


def _messages(stderr: str) -> str:
    return "".join(line + "\n" for line in stderr.splitlines()
                   if not line.startswith("import time:"))


def test_images_and_ps_print_the_same_without_click(registry_plain, test_images, run_pbox,
                                                     pbox_root):
    imgs = test_images(registry_plain)
    bb = imgs.busybox
    run_pbox("pull", "-q", bb.reference)
    run_pbox("pull", "-q", imgs.layers.reference)
    run_pbox("pull", "-q", imgs.uncompressed.by_digest)  # dangling, with a digest
    run_pbox("tag", bb.reference, "me/app:1")
    run_pbox("tag", bb.reference, "me/app:2")
    run_pbox("tag", imgs.layers.reference, "localhost:5000/other")
    run_pbox("create", "--name", "made", "-l", "role=web", bb.reference, "true")
    run_pbox("run", "--name", "ran", bb.reference, "sh", "-c", "exit 3", expect_rc=3)
    run_pbox("commit", "ran")  # dangling, without a digest
    run_pbox("run", "-d", "--name", "up", bb.reference, "sleep", "60")
    root = pbox_root.root
    try:
        cases = [
            ["images"], ["images", "-a"], ["images", "-q"], ["images", "-aq", "--no-trunc"],
            ["images", "--digests"], ["images", "--no-trunc", "--digests"],
            ["images", "-f", "dangling=true"], ["images", "--filter=dangling=false", "-q"],
            ["images", "-f", "reference=me/*", "--filter", "reference=*other"],
            ["images", "-f", "label=org.opencontainers.image.title"],
            ["images", "-f", f"before={bb.reference}"], ["images", "-f", "since=me/app:1"],
            ["images", "--format", "json"],
            ["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Digest}}"],
            ["images", "--format", "table {{.ID}}\\t{{.Size}}\\t{{.CreatedAt}}"],
            ["images", "me/app"], ["images", "me/app:2", "-q"], ["images", "nothing/here"],
            ["image", "ls"], ["image", "list", "-a", "--digests"],
            ["ps"], ["ps", "-a"], ["ps", "-aq"], ["ps", "-a", "--no-trunc"], ["ps", "-as"],
            ["ps", "-l"], ["ps", "-n", "2", "-q"], ["ps", "-a", "-f", "status=exited"],
            ["ps", "-a", "--filter", "label=role=web", "--filter", "name=ma"],
            ["ps", "-a", "--format", "json"], ["ps", "-a", "--format", "{{.Names}} {{.State}}"],
            ["container", "ls", "-a"], ["container", "ps", "-q"],
            # errors: the same message and exit code
            ["images", "-f", "nonsense=1"], ["images", "--format", "{{.Nope"],
            ["images", "-f", "before=no/such:image"], ["ps", "-f", "status=sleepy"],
        ]
        for args in cases:
            fast, slow = _both_paths(run_pbox, root, *args)
            assert not _imported(fast.stderr, "click"), args
            if not any(a.startswith(("before=", "since=")) for a in args):
                # (those resolve a name, which may log)
                assert not _imported(fast.stderr, "logging"), args
            assert _imported(slow.stderr, "click"), args
            if not _seconds_apart(fast.stdout, slow.stdout):  # a busy machine, four times
                assert fast.stdout == slow.stdout, args
            assert fast.returncode == slow.returncode, args
            assert _messages(fast.stderr) == _messages(slow.stderr), args
            if args[-1] in ("nonsense=1", "{{.Nope", "before=no/such:image", "status=sleepy"):
                assert fast.returncode == 125 and _messages(fast.stderr).startswith("Error: ")
            else:
                assert fast.returncode == 0, (args, fast.stderr)
        # the store really holds what the cases are about
        out = run_pbox("images", "-a").stdout
        assert out.count("<none>") >= 3 and "me/app" in out and "localhost:5000/other" in out
        assert run_pbox("ps", "-q").stdout.count("\n") == 1
        assert run_pbox("ps", "-aq").stdout.count("\n") == 3
        # options the short path does not take still work, through click
        r = run_pbox("images", "--help")
        assert "Usage:" in r.stdout
    finally:
        run_pbox("rm", "-f", "up", check=False)
