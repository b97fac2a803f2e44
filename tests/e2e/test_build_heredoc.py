"""build: COPY/ADD heredocs, ONBUILD triggers, ADD of URLs, --iidfile, --squash, --label,
and what a failing RUN reports; as the test user, on the test busybox image."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest

HEREDOCS = """\
FROM {bb}
ARG WHO=world
COPY <<EOF /greeting
hello $WHO "quoted"
EOF
COPY <<-"RAW" <<two.txt /docs/
\tliteral $WHO
\tRAW
second ${{WHO}}
two.txt
ADD --chmod=755 <<run.sh /usr/local/bin/
#!/bin/sh
echo ran
run.sh
CMD cat /greeting /docs/RAW /docs/two.txt; stat -c '%a' /greeting /docs/two.txt \\
    /usr/local/bin/run.sh; run.sh
"""


@pytest.mark.idmap
def test_copy_and_add_heredocs(bb, run_pbox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(HEREDOCS.format(bb=bb))
    run_pbox("build", "-t", "docs", str(ctx))
    out = run_pbox("run", "--rm", "docs").stdout.splitlines()
    assert out == ['hello world "quoted"', "literal $WHO", "second world",
                   "664", "664", "755", "ran"]
    hist = run_pbox("history", "--no-trunc", "--format", "{{.CreatedBy}}", "docs").stdout
    assert "COPY <<EOF /greeting # buildkit" in hist
    # the content is part of the cache key
    assert run_pbox("build", str(ctx)).stdout.count("Using cache") == 5
    (ctx / "Dockerfile").write_text(HEREDOCS.format(bb=bb).replace("second", "2nd"))
    r = run_pbox("build", "-t", "docs2", str(ctx))
    assert r.stdout.count("Using cache") == 2
    assert "2nd world" in run_pbox("run", "--rm", "docs2").stdout


@pytest.mark.idmap
def test_onbuild_triggers_run_once_in_the_child(bb, run_pbox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "trigger.txt").write_text("from the child's context\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nONBUILD COPY trigger.txt /from-trigger\n"
        "ONBUILD RUN echo \"ran: $(cat /from-trigger)\" >> /triggered\n"
        "ONBUILD COPY <<EOF /doc.txt\ninline $PWD\nEOF\n")
    r = run_pbox("build", "-t", "parent", str(ctx))
    assert "Executing" not in r.stdout
    cfg = json.loads(run_pbox("image", "inspect", "parent").stdout)[0]["Config"]
    assert cfg["OnBuild"] == ["COPY trigger.txt /from-trigger",
                              "RUN echo \"ran: $(cat /from-trigger)\" >> /triggered",
                              "COPY <<EOF /doc.txt\ninline $PWD\nEOF"]
    (ctx / "Dockerfile").write_text("FROM parent\nRUN echo child >> /triggered\n")
    r = run_pbox("build", "-t", "child", str(ctx))
    assert "# Executing 3 build triggers" in r.stdout
    assert r.stdout.index("Running trigger: COPY") < r.stdout.index("Step 2/2 : RUN")
    assert run_pbox("run", "--rm", "child", "cat", "/triggered", "/doc.txt").stdout == (
        "ran: from the child's context\nchild\ninline \n")
    cfg = json.loads(run_pbox("image", "inspect", "child").stdout)[0]["Config"]
    assert not cfg.get("OnBuild")
    # a grandchild inherits no trigger: they ran once
    (ctx / "Dockerfile").write_text("FROM child\nRUN cat /triggered\n")
    r = run_pbox("build", "-t", "grandchild", str(ctx))
    assert "Executing" not in r.stdout and r.stdout.count("ran: from") == 1
    # docker's refusals
    for bad in ("ONBUILD ONBUILD RUN true", "ONBUILD FROM scratch", "ONBUILD MAINTAINER me"):
        (ctx / "Dockerfile").write_text(f"FROM {bb}\n{bad}\n")
        r = run_pbox("build", str(ctx), expect_rc=1)
        assert r.stderr.startswith("Error: Dockerfile:2") and "Traceback" not in r.stderr


def _tar_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    hits: list = []

    def do_GET(self):  # noqa: N802
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_files():
    _Files.files = {}
    _Files.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Files
    finally:
        server.shutdown()
        server.server_close()


def test_add_url_checksum_and_cache(bb, run_pbox, tmp_path, http_files):
    base, files = http_files
    files.files["/files/data.txt"] = b"remote data\n"
    files.files["/dl/app.tar"] = _tar_bytes({"inside": b"x"})
    good = hashlib.sha256(b"remote data\n").hexdigest()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    text = (f"FROM {bb}\nADD {base}/files/data.txt /srv/\n"
            f"ADD --checksum=sha256:{good} {base}/files/data.txt /named.txt\n"
            f"ADD {base}/dl/app.tar /tars/\n"
            "CMD stat -c '%n %a %Y' /srv/data.txt /named.txt; cat /named.txt; ls /tars\n")
    (ctx / "Dockerfile").write_text(text)
    run_pbox("build", "-t", "urls", str(ctx))
    assert run_pbox("run", "--rm", "urls").stdout.splitlines() == [
        "/srv/data.txt 600 1700000000", "/named.txt 600 1700000000", "remote data",
        "app.tar"]  # a downloaded tar is not extracted
    # unchanged: cached; a step with a checksum is not even downloaded again
    files.hits.clear()
    r = run_pbox("build", str(ctx))
    assert r.stdout.count("Using cache") == 4
    assert sorted(files.hits) == ["/dl/app.tar", "/files/data.txt"]
    # changed content: the step without checksum is rebuilt
    files.files["/dl/app.tar"] = _tar_bytes({"other": b"y"})
    r = run_pbox("build", str(ctx))
    assert r.stdout.count("Using cache") == 2  # steps 2 and 3
    assert "Step 4/5" in r.stdout.split("Using cache")[-1]
    # a wrong checksum, a missing file: one clear error line, exit 1
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nADD --checksum=sha256:{'0' * 64} {base}/files/data.txt /x\n")
    r = run_pbox("build", str(ctx), expect_rc=1)
    assert "checksum mismatch" in r.stderr and f"sha256:{good}" in r.stderr
    assert r.stderr.startswith("Error: ") and len(r.stderr.splitlines()) == 1
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nADD {base}/nothing /x\n")
    r = run_pbox("build", str(ctx), expect_rc=1)
    assert "404" in r.stderr and "Traceback" not in r.stderr
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nCOPY {base}/files/data.txt /x\n")
    r = run_pbox("build", str(ctx), expect_rc=1)
    assert "URL" in r.stderr
    # --unpack: a downloaded tar extracted on request, a local one kept as it is
    (ctx / "local.tar").write_bytes(_tar_bytes({"local-inside": b"z"}))
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nADD --unpack=true {base}/dl/app.tar /unpacked/\n"
        "ADD --unpack=false local.tar /raw/\nCMD ls /unpacked /raw\n")
    run_pbox("build", "-t", "unpack", str(ctx))
    assert run_pbox("run", "--rm", "unpack").stdout.split() == [
        "/raw:", "local.tar", "/unpacked:", "other"]


def test_iidfile_squash_label_and_failing_step(bb, run_pbox, pbox_root, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nRUN echo one > /one && echo gone > /gone\nRUN rm /gone /bin/vi\n"
        "ENV K=v\nRUN echo three > /three\n")
    iid = tmp_path / "iid"
    r = run_pbox("build", "--squash", "--iidfile", str(iid), "--label", "a=b", "-t", "sq",
                 str(ctx))
    image_id = iid.read_text()
    assert image_id.startswith("sha256:") and image_id[7:19] in r.stdout
    info = json.loads(run_pbox("image", "inspect", "sq").stdout)[0]
    base = json.loads(run_pbox("image", "inspect", bb).stdout)[0]
    assert info["Id"] == image_id and info["Config"]["Labels"]["a"] == "b"
    assert info["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
    assert len(info["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
    out = run_pbox("run", "--rm", "sq", "sh", "-c",
                   "cat /one /three; ls /gone /bin/vi 2>&1; echo $K").stdout
    assert out.startswith("one\nthree\n") and out.count("No such file") == 2
    assert out.endswith("v\n")
    hist = run_pbox("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}",
                    "sq").stdout
    assert "echo three" in hist and "rm /gone" in hist  # every step stays in the history
    # -q prints only the id, --iidfile the same one
    r = run_pbox("build", "-q", "--iidfile", str(iid), str(ctx))
    assert r.stdout.strip() == iid.read_text()
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    other = "arm64" if arch == "amd64" else "amd64"
    r = run_pbox("build", "--progress", "quiet", "--platform", f"linux/{arch}", str(ctx))
    assert r.stdout.strip() == iid.read_text()
    r = run_pbox("build", "--platform", f"linux/{other}", str(ctx), expect_rc=125)
    assert r.stderr.startswith("Error: ") and "host platform" in r.stderr
    # a failing RUN: the step, its line and the exit code; nothing left behind (no
    # container, no layer, no temporary directory, not the secret it mounted)
    import os

    def store_state():
        tmp = os.path.join(pbox_root.root, "tmp")
        return (sorted(os.listdir(os.path.join(pbox_root.root, "layers"))),
                sorted(n for n in os.listdir(tmp) if not n.startswith(".")
                       and not n.endswith(".lock")) if os.path.isdir(tmp) else [])

    before = store_state()
    (tmp_path / "s").write_text("x")
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nENV A=1\n\nRUN --mount=type=secret,id=s echo before > /f; exit 3\n")
    r = run_pbox("build", "--secret", f"id=s,src={tmp_path / 's'}", str(ctx), expect_rc=1)
    assert r.stderr == ('Error: building at STEP "RUN --mount=type=secret,id=s echo before '
                        '> /f; exit 3" (Dockerfile:4): exit status 3\n')
    assert run_pbox("ps", "-a", "-q").stdout == ""
    assert store_state() == before


def _git(*args, cwd=None):
    import subprocess

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_add_git_repository_over_http(bb, run_pbox, tmp_path):
    """A repository served by a plain HTTP server (git's dumb protocol) on 127.0.0.1."""
    import functools
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "-q", str(work))
    (work / "sub").mkdir()
    (work / "sub" / "f.txt").write_text("v1\n")
    (work / "top.txt").write_text("top\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    _git("tag", "v1", cwd=work)
    (work / "sub" / "f.txt").write_text("v2\n")
    _git("commit", "-q", "-am", "two", cwd=work)
    served = tmp_path / "served"
    served.mkdir()
    _git("clone", "-q", "--bare", str(work), str(served / "repo.git"))
    _git("update-server-info", cwd=served / "repo.git")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/repo.git"
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM {bb}\nADD {url} /head/\nADD {url}#v1:sub /old\n"
            f"ADD --keep-git-dir=true {url}#main /kept\n"
            "CMD cat /head/top.txt /head/sub/f.txt /old/f.txt; ls -a /head /kept | grep -c .git\n")
        run_pbox("build", "-t", "gitadd", str(ctx))
        assert run_pbox("run", "--rm", "gitadd").stdout == "top\nv2\nv1\n1\n"
        # unchanged: cached; a new commit on the branch rebuilds what follows it
        assert run_pbox("build", str(ctx)).stdout.count("Using cache") == 4
        (work / "top.txt").write_text("top 2\n")
        _git("commit", "-q", "-am", "three", cwd=work)
        _git("push", "-q", str(served / "repo.git"), "main", cwd=work)
        _git("update-server-info", cwd=served / "repo.git")
        run_pbox("build", "-t", "gitadd2", str(ctx))
        assert run_pbox("run", "--rm", "gitadd2").stdout.startswith("top 2\n")
        (ctx / "Dockerfile").write_text(f"FROM {bb}\nADD {url}#nosuch /x\n")
        r = run_pbox("build", str(ctx), expect_rc=1)
        assert "nosuch" in r.stderr and len(r.stderr.splitlines()) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_copy_exclude(bb, run_pbox, tmp_path):
    ctx = tmp_path / "ctx"
    for name in ("a.txt", "b.md", "secret.key", "sub/c.txt", "sub/d.md"):
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(name + "\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {bb} AS src\nRUN mkdir -p /s/keep /s/logs && echo a > /s/a.txt && "
        "echo b > /s/b.md && echo l > /s/logs/x.log && echo k > /s/keep/k.txt\n"
        f"FROM {bb}\nCOPY --exclude=*.txt --exclude=secret* . /ctx/\n"
        "COPY --from=src --exclude=logs --exclude=*.md /s /s/\n"
        "COPY --exclude=b.* *.md *.txt /glob/\n"
        "CMD find /ctx /s /glob | sort\n")
    run_pbox("build", "-t", "excl", str(ctx))
    assert run_pbox("run", "--rm", "excl").stdout.split() == [
        "/ctx", "/ctx/Dockerfile", "/ctx/b.md", "/ctx/sub", "/ctx/sub/c.txt", "/ctx/sub/d.md",
        "/glob", "/glob/a.txt", "/s", "/s/a.txt", "/s/keep", "/s/keep/k.txt"]


def test_format_decides_the_pushed_manifest(bb, run_pbox, registry_plain, tmp_path):
    import urllib.request

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nENV FORMAT=1\n")
    accept = ("application/vnd.docker.distribution.manifest.v2+json, "
              "application/vnd.oci.image.manifest.v1+json")
    for fmt, media in (("docker", "application/vnd.docker.distribution.manifest.v2+json"),
                       ("oci", "application/vnd.oci.image.manifest.v1+json")):
        ref = f"{registry_plain.host}/built/{fmt}:1"
        run_pbox("build", "--format", fmt, "-t", ref, str(ctx))
        run_pbox("push", ref)
        req = urllib.request.Request(f"{registry_plain.url}/v2/built/{fmt}/manifests/1",
                                     headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["mediaType"] == media
