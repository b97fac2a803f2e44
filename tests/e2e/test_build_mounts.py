"""build: RUN --mount (cache, bind, secret, tmpfs) and RUN --network, as the test user.
What a mount showed must never be in a layer, the history or the image's files."""

from __future__ import annotations

import json

import pytest

SECRET = "s3cr3t-value-7f1e"

MOUNTS = """\
FROM {bb} AS tools
RUN mkdir -p /opt/tool && echo tool-v1 > /opt/tool/version
FROM {bb}
WORKDIR /work
RUN --mount=type=cache,target=/cache,id=c1 echo run >> /cache/log && wc -l < /cache/log > /count
RUN --mount=type=bind,target=/ctx cat /ctx/input.txt > /from-ctx && ls /ctx > /ctx-list \\
    && ! touch /ctx/new 2>/dev/null
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/mnt/tool,rw \\
    cat /mnt/tool/version > /from-stage && echo scribble > /mnt/tool/version
RUN --mount=type=bind,from=tools,source=/opt/tool,target=mnt cat mnt/version >> /from-stage
RUN --mount=type=secret,id=tok stat -c '%a' /run/secrets/tok > /secret-mode \\
    && [ "$(cat /run/secrets/tok)" = "$(printf {secret_split})" ]
RUN --mount=type=secret,id=tok,env=TOKEN,required [ "$TOKEN" = "$(printf {secret_split})" ] \
    && echo ok > /env
RUN --mount=type=secret,id=absent [ ! -e /run/secrets/absent ]
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && grep -c ' /scratch ' /proc/mounts \\
    > /tmpfs-seen
RUN --network=none ip -o link | grep -v ' lo' | wc -l > /links
CMD cat /count /from-ctx /ctx-list /from-stage /secret-mode /env /tmpfs-seen /links; \\
    ls -a / /work | tr '\\n' ' '; echo; \\
    find / -xdev -type f ! -path '/proc/*' ! -path '/sys/*' | xargs grep -l "$(printf {secret_split})"; true
"""


def _ctx(tmp_path, bb):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    split = f"'%s%s' '{SECRET[:5]}' '{SECRET[5:]}'"
    (ctx / "Dockerfile").write_text(MOUNTS.format(bb=bb, secret=SECRET, secret_split=split))
    (ctx / "input.txt").write_text("from the context\n")
    (ctx / "ignored.txt").write_text("ignored\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    (tmp_path / "tok").write_text(SECRET)
    return ctx


def test_run_mounts_leave_nothing_behind(bb, run_pbox, tmp_path):
    ctx = _ctx(tmp_path, bb)
    args = ["--secret", f"id=tok,src={tmp_path / 'tok'}"]
    run_pbox("build", *args, "-t", "mounts", str(ctx))
    out = run_pbox("run", "--rm", "mounts").stdout.splitlines()
    assert out[:8] == ["1", "from the context", "Dockerfile", "input.txt", "tool-v1",
                       "tool-v1", "400", "ok"]
    assert out[8:10] == ["1", "0"]
    listing = out[10].split()
    for gone in ("cache", "ctx", "mnt", "run", "scratch"):
        assert gone not in listing, out[10]
    assert len(out) == 11, out  # no file of the image holds the secret
    hist = run_pbox("history", "--no-trunc", "--format", "{{.CreatedBy}}", "mounts").stdout
    assert SECRET not in hist
    assert SECRET not in run_pbox("image", "inspect", "mounts").stdout
    # unchanged: every step cached; the cache mount was not touched
    r = run_pbox("build", *args, str(ctx))
    assert r.stdout.count("Using cache") == 12, r.stdout
    # the cache mount persists across builds (and is no part of the layer)
    run_pbox("build", "--no-cache", *args, "-t", "again", str(ctx))
    assert run_pbox("run", "--rm", "again", "cat", "/count").stdout.strip() == "2"
    # builder prune empties it
    run_pbox("builder", "prune", "-f")
    run_pbox("build", *args, "-t", "pruned", str(ctx))
    assert run_pbox("run", "--rm", "pruned", "cat", "/count").stdout.strip() == "1"
    # a bind from the context is part of the key: a changed file reruns its step
    (ctx / "input.txt").write_text("changed\n")
    r = run_pbox("build", *args, "-t", "changed", str(ctx))
    assert run_pbox("run", "--rm", "changed", "cat", "/from-ctx").stdout == "changed\n"
    # an ignored file changing is no change
    (ctx / "ignored.txt").write_text("still ignored\n")
    r = run_pbox("build", *args, str(ctx))
    assert r.stdout.count("Using cache") == 12, r.stdout


def test_secret_from_env_and_bad_mounts(bb, run_pbox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nRUN --mount=type=secret,id=api,target=/key,mode=0440,uid=1000 "
        "stat -c '%a %u' /key > /info && cat /key >> /info\n")
    run_pbox("build", "--secret", "id=api,env=API_KEY", "-t", "envsec", str(ctx),
             env={"API_KEY": "from-env"})
    out = run_pbox("run", "--rm", "envsec", "sh", "-c", "cat /info; echo; ls -a /").stdout
    assert out.splitlines()[:2] == ["440 1000", "from-env"] and "key" not in out.split()
    for bad, word in (("--mount=type=nope,target=/x", "nope"),
                      ("--mount=type=cache", "target"),
                      ("--mount=type=bind,target=/x,source=missing", "missing"),
                      ("--mount=type=cache,target=/x,sharing=sometimes", "sharing"),
                      ("--network=bridge2", "network")):
        (ctx / "Dockerfile").write_text(f"FROM {bb}\nRUN {bad} true\n")
        r = run_pbox("build", str(ctx), expect_rc=1)
        assert word in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
    # a required secret that is missing: an error naming it, exit 1
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nRUN --mount=type=secret,id=tok,required true\n")
    r = run_pbox("build", str(ctx), expect_rc=1)
    assert "secret tok" in r.stderr and r.stderr.startswith("Error: building at STEP")
    assert run_pbox("ps", "-a", "-q").stdout == ""
    r = run_pbox("build", "--secret", "nope", str(ctx), check=False)
    assert r.returncode == 125 and r.stderr.startswith("Error: ")


@pytest.mark.idmap
def test_mounts_with_any_id_mapping(bb, run_pbox, tmp_path):
    """A cache mount, a context bind (bound directly: no .dockerignore) and a secret
    also work with the single-id mapping."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data").write_text("bound\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {bb}\nRUN --mount=type=cache,target=/var/cache/x echo c >> /var/cache/x/f "
        "&& cat /var/cache/x/f | wc -l > /n\n"
        "RUN --mount=target=/src cat /src/data > /copied && ! touch /src/w 2>/dev/null\n"
        "RUN --mount=type=secret,id=k,required wc -c < /run/secrets/k > /k-size\n"
        "CMD cat /n /copied /k-size; ls /var; ls -d /run 2>&1; true\n")
    (tmp_path / "k").write_text("12345")
    run_pbox("build", "--secret", f"id=k,src={tmp_path / 'k'}", "-t", "idm", str(ctx))
    assert run_pbox("run", "--rm", "idm").stdout == (
        "1\nbound\n5\nspool\nwww\nls: /run: No such file or directory\n")
    cfg = json.loads(run_pbox("image", "inspect", "idm").stdout)[0]
    assert cfg["Id"].startswith("sha256:")
