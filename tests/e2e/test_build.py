"""build and builder prune, as the test user, on the test busybox image."""

from __future__ import annotations

import io
import json
import tarfile


def _write(d, files: dict):
    for name, text in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
    return d


def _tar_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _id(run_pbox, ctx, *args, env=None):
    r = run_pbox("build", "-q", *args, str(ctx), env=env)
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:"), r.output
    return image_id


WEBAPP = """\
FROM {bb}
LABEL maintainer=tests
WORKDIR /app
ENV GREETING=hello PORT=8080
COPY app.py requirements.txt ./
ADD data.tar /srv/data/
COPY static static
COPY . /ctx/
RUN echo "installed $GREETING" > /app/installed.txt && mkdir -p /var/run/app
VOLUME /srv/data
EXPOSE $PORT 53/udp
USER nobody
CMD ["sh", "-c", "cat app.py installed.txt static/index.html /srv/data/d.txt; echo $GREETING; id -u; ls /ctx"]
"""


def test_webapp_build_run_cache_and_invalidation(bb, run_pbox, tmp_path):
    ctx = _write(tmp_path / "ctx", {
        "Dockerfile": WEBAPP.format(bb=bb),
        "app.py": "print('app')\n",
        "requirements.txt": "flask\n",
        "static/index.html": "<h1>hi</h1>\n",
        "secret.key": "do not ship\n",
        ".dockerignore": "secret.key\n*.tmp\ndocs\n!docs/keep.md\n",
        "docs/keep.md": "keep\n",
        "docs/drop.md": "drop\n",
        "scratch.tmp": "x\n",
        "data.tar": _tar_bytes({"d.txt": b"from the tar\n"}),
    })
    r = run_pbox("build", "-t", "webapp:1", str(ctx))
    assert "Step 1/13 : FROM" in r.stdout and "Successfully tagged webapp:1" in r.stdout
    assert "Using cache" not in r.stdout
    out = run_pbox("run", "--rm", "webapp:1").stdout.splitlines()
    assert out[:5] == ["print('app')", "installed hello", "<h1>hi</h1>", "from the tar", "hello"]
    assert out[5] == "65534"
    shipped = out[6:]
    assert "app.py" in shipped and "Dockerfile" in shipped and "data.tar" in shipped
    assert "secret.key" not in shipped and "scratch.tmp" not in shipped
    assert run_pbox("run", "--rm", "webapp:1", "ls", "/ctx/docs").stdout == "keep.md\n"
    info = json.loads(run_pbox("image", "inspect", "webapp:1").stdout)[0]
    cfg = info["Config"]
    assert cfg["WorkingDir"] == "/app" and cfg["User"] == "nobody"
    assert "GREETING=hello" in cfg["Env"] and "PORT=8080" in cfg["Env"]
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert set(cfg["Volumes"]) == {"/srv/data"} and cfg["Labels"]["maintainer"] == "tests"
    hist = run_pbox("history", "--no-trunc", "--format", "{{.CreatedBy}}", "webapp:1").stdout
    assert "/bin/sh -c #(nop)  ENV GREETING=hello PORT=8080" in hist
    assert "RUN /bin/sh -c echo \"installed $GREETING\"" in hist and "# buildkit" in hist

    # the steps' images are the build cache's, not listed: the base and webapp:1
    assert len(set(run_pbox("images", "-q").stdout.split())) == 2
    # unchanged: every step from the cache, the same image
    first = _id(run_pbox, ctx)
    r = run_pbox("build", str(ctx))
    assert r.stdout.count("---> Using cache") == 12
    assert first[7:19] in r.stdout
    # a changed source invalidates its COPY and everything after it
    (ctx / "static" / "index.html").write_text("<h1>changed</h1>\n")
    r = run_pbox("build", "-t", "webapp:2", str(ctx))
    steps = r.stdout.split("Step ")[1:]
    cached = ["Using cache" in s for s in steps]
    assert cached == [False] + [True] * 5 + [False] * 7, r.stdout
    assert "<h1>changed</h1>" in run_pbox("run", "--rm", "webapp:2").stdout
    # builder prune forgets the records: the next build runs every step again
    run_pbox("builder", "prune", "-f")
    assert "Using cache" not in run_pbox("build", str(ctx)).stdout


MULTI = """\
ARG BASE={bb}
FROM $BASE AS builder
ARG VERSION=0.1
RUN mkdir /out && echo "v$VERSION" > /out/version && echo unused > /out/other
FROM $BASE AS unused
RUN false
FROM scratch AS final
COPY --from=builder /out/version /version
FROM $BASE
ARG BASE
ARG VERSION
COPY --from=final /version /etc/
COPY --from=builder --chown=nobody:nobody --chmod=640 /out /out
ARG TARGETOS
RUN echo "base=$BASE version=${{VERSION:-none}} os=$TARGETOS" > /info
CMD cat /etc/version /info; stat -c '%U:%G %a' /out/version
"""


def test_multistage_target_and_build_args(bb, run_pbox, tmp_path):
    ctx = _write(tmp_path / "ctx", {"Dockerfile": MULTI.format(bb=bb)})
    r = run_pbox("build", "--build-arg", "VERSION=2.5", "--label", "built=yes", "-t", "multi",
                 str(ctx))
    assert "RUN false" not in r.stdout  # a stage nobody needs is not built
    out = run_pbox("run", "--rm", "multi").stdout.splitlines()
    assert out == ["v2.5", f"base={bb} version=2.5 os=linux", "nobody:nobody 640"]
    info = json.loads(run_pbox("image", "inspect", "multi").stdout)[0]
    assert info["Config"]["Labels"]["built"] == "yes"
    run_pbox("build", "--target", "final", "-t", "final-only", str(ctx))
    info = json.loads(run_pbox("image", "inspect", "final-only").stdout)[0]
    assert len(info["RootFS"]["Layers"]) == 1
    r = run_pbox("build", "--target", "nope", str(ctx), check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("Error: ") and "nope" in r.stderr
    r = run_pbox("build", "--build-arg", "NOT_DECLARED=1", str(ctx))
    assert "NOT_DECLARED" in r.output


def test_build_errors(bb, run_pbox, tmp_path):
    ctx = _write(tmp_path / "ctx", {"Dockerfile": f"FROM {bb}\nRUN echo before\nRUN false\n"})
    r = run_pbox("build", "-q", str(ctx), expect_rc=1)
    assert r.stdout == "" and r.stderr.startswith("Error: building at STEP")
    r = run_pbox("build", str(ctx), expect_rc=1)
    assert "before" in r.stdout
    assert 'Error: building at STEP "RUN false" (Dockerfile:3): exit status 1' in r.stderr
    assert "Traceback" not in r.stderr
    assert run_pbox("ps", "-a", "-q").stdout == ""  # the step's container is gone
    assert run_pbox("images", "-q").stdout.split() == [run_pbox("images", "-q", bb).stdout.strip()]
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nCOPY missing.txt /\n")
    r = run_pbox("build", str(ctx), check=False)
    assert r.returncode != 0 and "missing.txt" in r.stderr and r.stderr.startswith("Error: ")
    r = run_pbox("build", str(tmp_path / "nowhere"), check=False)
    assert r.returncode == 125 and r.stderr.startswith("Error: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_pbox("build", str(empty), expect_rc=1)
    assert "Dockerfile" in r.stderr and "Traceback" not in r.stderr
    (empty / "Dockerfile").write_text(f"FROM {bb}\nNOSUCH thing\n")
    r = run_pbox("build", str(empty), expect_rc=1)
    assert r.stderr.startswith("Error: Dockerfile:2") and len(r.stderr.splitlines()) == 1


def test_context_from_stdin_and_symlinks(bb, run_pbox, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    ctx = _write(tmp_path / "ctx", {"Dockerfile": f"FROM {bb}\nCOPY . /c/\n"
                                    "RUN mkdir -p /usr/real && ln -s usr/real /lnk\n"
                                    "COPY f /lnk/\nWORKDIR /lnk/made\n"
                                    "CMD [\"sh\", \"-c\", \"readlink /c/link; cat /c/f; "
                                    "readlink /lnk; cat /usr/real/f; pwd -P\"]\n",
                                    "f": "inside\n"})
    (ctx / "link").symlink_to(str(outside))
    run_pbox("build", "-t", "links", str(ctx))
    assert run_pbox("run", "--rm", "links").stdout == (
        f"{outside}\ninside\nusr/real\ninside\n/usr/real/made\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(str(ctx / "Dockerfile"), "Dockerfile")
        tf.add(str(ctx / "f"), "f")
    r = run_pbox("build", "-q", "-", input=buf.getvalue())
    assert r.stdout.strip().startswith("sha256:")


def test_reproducible_with_source_date_epoch(bb, run_pbox, tmp_path):
    ctx = _write(tmp_path / "ctx", {
        "Dockerfile": f"FROM {bb}\nCOPY a /a\nRUN echo made > /made\nENV X=1\n",
        "a": "data\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    one = _id(run_pbox, ctx, env=env)
    (ctx / "a").touch()  # a newer mtime, clamped to the epoch
    two = _id(run_pbox, ctx, "--no-cache", env=env)
    assert one == two
    info = json.loads(run_pbox("image", "inspect", one).stdout)[0]
    assert info["Created"].startswith("2023-11-14T22:13:20")



CONFIG = """\
FROM {bb} AS base
SHELL ["/bin/sh", "-ec"]
RUN <<EOF
echo one > /heredoc
echo two >> /heredoc
EOF
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost || exit 1
STOPSIGNAL SIGINT
ONBUILD RUN echo later
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /heredoc /bb-passwd"]
COPY --from={bb} /etc/passwd /bb-passwd
"""


def test_config_fields_heredoc_stdin_dockerfile_and_network(bb, run_pbox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    run_pbox("build", "-t", "cfg", "-f", "-", str(ctx), input=CONFIG.format(bb=bb))
    out = run_pbox("run", "--rm", "cfg").stdout
    assert out.startswith("one\ntwo\nroot:x:0:0")
    cfg = json.loads(run_pbox("image", "inspect", "cfg").stdout)[0]["Config"]
    assert cfg["Shell"] == ["/bin/sh", "-ec"] and cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost || exit 1"],
                                  "Interval": 5_000_000_000, "Retries": 2}
    assert cfg["OnBuild"] == ["RUN echo later"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["Cmd"] == ["cat /heredoc /bb-passwd"]
    # an ENTRYPOINT drops the CMD of the base image, not one of its own stage
    (ctx / "Dockerfile").write_text('FROM cfg\nENTRYPOINT ["echo", "x"]\n')
    run_pbox("build", "-t", "ep", str(ctx))
    assert run_pbox("run", "--rm", "ep").stdout == "x\n"
    # RUN steps honour --network
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nRUN ip -o link | grep -v ' lo' | wc -l "
                                    "> /links\nCMD cat /links\n")
    run_pbox("build", "--network", "none", "-t", "nonet", str(ctx))
    assert run_pbox("run", "--rm", "--network", "none", "nonet").stdout.strip() == "0"


def test_context_never_leaves_its_root(tmp_path):
    from pbox.build.context import Context, extract_context_tar
    from pbox.errors import BuildError

    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "secret").write_text("s\n")
    ctx = _write(tmp_path / "ctx", {"a.txt": "a\n", "d/b.txt": "b\n", "d/c.md": "c\n"})
    (ctx / "via").symlink_to(str(outside))
    c = Context.open(str(ctx), "d/c.md\n")
    assert c.lookup("via/sub/secret") is None  # a link on the way is not followed
    assert c.lookup("../outside/sub/secret") is None and c.lookup("/a.txt").endswith("a.txt")
    assert c.glob("via/*") == [] and c.glob("d/*") == ["d/b.txt"]
    assert c.glob("*.txt") == ["a.txt"] and c.glob("d/c.md") == []
    assert [r for r, _, _ in c.walk("")] == ["", "a.txt", "d", "d/b.txt", "via"]
    before = c.digest(["d"])
    (ctx / "d" / "c.md").write_text("ignored: no change\n")
    assert c.digest(["d"]) == before
    (ctx / "d" / "b.txt").write_text("changed\n")
    assert c.digest(["d"]) != before

    def tar_of(name, data=b"x"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            link = tarfile.TarInfo("up")
            link.type = tarfile.SYMTYPE
            link.linkname = str(outside)
            tf.addfile(link)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf

    dest = tmp_path / "unpacked"
    dest.mkdir()
    extract_context_tar(tar_of("../../escape"), str(dest))
    assert (dest / "escape").read_text() == "x" and not (tmp_path / "escape").exists()
    dest2 = tmp_path / "unpacked2"
    dest2.mkdir()
    try:
        extract_context_tar(tar_of("up/deeper/planted"), str(dest2))
        raise AssertionError("a member below a link was written")
    except BuildError:
        pass
    assert not (outside / "deeper").exists()


def test_interrupted_build_leaves_the_store_clean(bb, run_pbox, pbox_cmd, pbox_root, tmp_path):
    import os
    import signal
    import subprocess

    ctx = _write(tmp_path / "ctx", {
        "Dockerfile": f"FROM {bb}\nRUN echo started; exec sleep 60\n"})
    env = pbox_root.env_with(None)
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
    p = subprocess.Popen([*pbox_cmd, "build", str(ctx)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in p.stdout:
            if line.strip() == "started":
                break
        os.killpg(p.pid, signal.SIGINT)  # ^C reaches the whole foreground group
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    assert run_pbox("ps", "-a", "-q").stdout == ""
    assert len(run_pbox("images", "-q").stdout.split()) == 1
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nRUN echo again\n")
    assert "again" in run_pbox("build", str(ctx)).stdout


def test_a_fully_cached_build_loads_no_container_or_url_code(bb, run_pbox, pbox_cmd, pbox_root,
                                                            tmp_path):
    # What a cached step needs is the cache index and the image store: creating
    # containers, writing images and parsing HTTP dates are for steps that run.
    import os
    import subprocess

    from harness import modules_in

    ctx = _write(tmp_path / "ctx", {
        "Dockerfile": f"FROM {bb}\nRUN echo hi > /hi\nCOPY f /f\n", "f": "data\n"})
    first = _id(run_pbox, ctx)
    env = pbox_root.env_with({"PYTHONPROFILEIMPORTTIME": "1"})
    if pbox_cmd[1:2] == ["-m"]:
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
    r = subprocess.run([*pbox_cmd, "build", "-q", str(ctx)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == first
    modules = modules_in(r.stderr)
    assert "pbox.build.executor" in modules  # the measurement saw the build
    for name in ("pbox.containers.create", "pbox.containers.fsops", "email.utils",
                 "pbox.commands.containers", "click", "logging"):  # (click: the short path)
        assert name not in modules, name


def test_copy_cache_sees_a_large_file_rewritten_with_same_size_and_mtime(bb, run_pbox,
                                                                         tmp_path):
    # Large context files' digests are remembered by inode, size, mtime and ctime: a
    # rewrite that keeps the size and puts the mtime back still changes the ctime.
    import os

    big = b"a" * (256 << 10)
    ctx = _write(tmp_path / "ctx", {"Dockerfile": f"FROM {bb}\nCOPY big /big\n", "big": big})
    path = ctx / "big"
    st = os.stat(path)
    first = _id(run_pbox, ctx)
    assert _id(run_pbox, ctx) == first  # cached
    path.write_bytes(b"b" * len(big))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = _id(run_pbox, ctx)
    assert second != first
    out = run_pbox("run", "--rm", second, "head", "-c", "3", "/big").stdout
    assert out == "bbb"
    assert run_pbox("builder", "prune", "-f").returncode == 0
    assert _id(run_pbox, ctx) != first


def test_progress_plain_prints_steps_with_their_time(bb, run_pbox, tmp_path):
    import re

    ctx = _write(tmp_path / "ctx", {"Dockerfile": f"FROM {bb}\nRUN echo ran-it\nCOPY f /f\n",
                                    "f": "x\n"})
    out = run_pbox("build", "--progress", "plain", "-t", "plain:1", str(ctx)).stdout
    lines = out.splitlines()
    assert [ln for ln in lines if ln.startswith("STEP ")] == [
        f"STEP 1/3: FROM {bb}", "STEP 2/3: RUN echo ran-it", "STEP 3/3: COPY f /f"]
    done = [ln for ln in lines if ln.startswith("--> ")]
    assert len(done) == 3 and all(re.fullmatch(r"--> [0-9a-f]{12} \(\d+\.\d\ds\)", d)
                                  for d in done), out
    assert "ran-it" in lines and lines[-1] == "Successfully tagged plain:1"
    again = run_pbox("build", "--progress=plain", "-t", "plain:1", str(ctx)).stdout
    assert again.count("--> Using cache ") == 2 and "ran-it" not in again.splitlines()
    # the default stays docker's classic builder output
    classic = run_pbox("build", "-t", "plain:1", str(ctx)).stdout.splitlines()
    assert classic[0] == f"Step 1/3 : FROM {bb}" and classic.count(" ---> Using cache") == 2


WEB = """\
FROM {bb}
WORKDIR /www
COPY index.html .
ENV PORT=80
EXPOSE 80
CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]
"""


def test_built_web_app_serves_on_a_published_port(bb, run_pbox, tmp_path):
    # The tutorial's shape end to end: build, run -d -p, the host reads the page, stop
    # closes the port.
    from harness.registry import fetch_retrying, free_port, port_refused

    ctx = _write(tmp_path / "web", {"Dockerfile": WEB.format(bb=bb),
                                    "index.html": "<h1>built by pbox</h1>\n"})
    _id(run_pbox, ctx, "-t", "web:1")
    port = free_port()
    run_pbox("run", "-d", "--name", "web1", "-p", f"127.0.0.1:{port}:80", "web:1")
    try:
        assert fetch_retrying(f"http://127.0.0.1:{port}/index.html") == b"<h1>built by pbox</h1>\n"
        run_pbox("stop", "-t", "1", "web1")
        assert port_refused(port)
    finally:
        run_pbox("rm", "-f", "web1", check=False)
