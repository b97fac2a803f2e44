"""pbox and podman exchange images both ways, through the registry and as archives.

Podman runs rootless with a private config and store (``harness.podman``): it pulls and
runs what pbox pushed, built or saved; pbox pulls, runs and builds on what podman
pushed.  The same image must keep its id (config digest) across both tools.
"""

from __future__ import annotations

import json

import pytest
from harness.podman import podman  # noqa: F401 (the fixture)

# what a container of the layered test image prints: its files, whiteouts applied
SHOW = ("md5sum /bin/busybox; cat /etc/passwd; ls /data /opaque; cat /hl/link; "
        "stat -c '%u %g %a' /owned/by1000.txt /usr/local/bin/suid")

DOCKERFILE = """\
FROM {base}
ENV GREETING=built-by-pbox
WORKDIR /work
COPY hello.txt ./
RUN echo "$GREETING" > /work/run.txt && rm /etc/group
CMD ["sh", "-c", "cat /work/hello.txt /work/run.txt; test -e /etc/group || echo no-group"]
"""
EXPECTED = "hello from the context\nbuilt-by-pbox\nno-group\n"


def podman_id(podman, ref: str) -> str:  # noqa: F811
    out = podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    return out if out.startswith("sha256:") else "sha256:" + out


def pbox_id(run_pbox, ref: str) -> str:
    return json.loads(run_pbox("inspect", ref).stdout)[0]["Id"]


def build(run_pbox, tmp_path, base: str, tag: str) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (ctx / "hello.txt").write_text("hello from the context\n")
    run_pbox("build", "-q", "-t", tag, ctx)
    return pbox_id(run_pbox, tag)


def test_podman_pulls_and_runs_what_pbox_pushed(podman, registry_plain, test_images,  # noqa: F811
                                                 run_pbox):
    img = test_images(registry_plain).layers  # whiteouts, opaque dir, owners, hardlink
    run_pbox("pull", "-q", img.reference)
    dest = f"{registry_plain.host}/interop/from-pbox:pulled"
    run_pbox("push", img.reference, dest)
    podman("pull", "-q", "--tls-verify=false", dest)
    assert podman_id(podman, dest) == img.config_digest
    got = podman("run", "--rm", "--network", "none", dest, "sh", "-c", SHOW).stdout
    assert got == run_pbox("run", "--rm", img.reference, "sh", "-c", SHOW).stdout
    assert "removed.txt" not in got and "lower1.txt" not in got and "upper.txt" in got


@pytest.mark.parametrize("how", ["push", "docker-archive", "oci-archive"])
def test_podman_runs_what_pbox_built(how, podman, registry_plain, test_images,  # noqa: F811
                                     run_pbox, tmp_path):
    base = test_images(registry_plain).busybox.reference
    tag = f"{registry_plain.host}/interop/built-by-pbox:{how}"
    image_id = build(run_pbox, tmp_path, base, tag)
    assert run_pbox("run", "--rm", tag).stdout == EXPECTED
    if how == "push":
        run_pbox("push", tag)
        podman("pull", "-q", "--tls-verify=false", tag)
    else:
        archive = tmp_path / f"{how}.tar"
        run_pbox("save", "--format", how, "-o", archive, tag)
        out = podman("load", "-i", archive).stdout
        assert out.strip().splitlines()[-1] == f"Loaded image: {tag}"
    assert podman_id(podman, tag) == image_id
    assert podman("run", "--rm", "--network", "none", tag).stdout == EXPECTED


@pytest.fixture(scope="module")
def podman_pushed(podman, registry_plain, test_images):  # noqa: F811
    """An image podman built and pushed (its own layer tars and compression):
    ``(reference, image id)``."""
    base = test_images(registry_plain).busybox.reference
    ref = f"{registry_plain.host}/interop/from-podman:1"
    podman("pull", "-q", "--tls-verify=false", base)
    # a layer of podman's own on top: written by podman, not by the harness
    cid = podman("create", "--network", "none", base, "sh", "-c",
                 "echo written-by-podman > /podman.txt && rm -r /var/spool").stdout.strip()
    podman("start", "-a", cid)
    podman("commit", "-q", "--change", 'CMD ["cat", "/podman.txt"]', cid, ref)
    podman("rm", cid)
    podman("push", "--tls-verify=false", ref)
    return ref, podman_id(podman, ref)


def test_pbox_pulls_and_runs_what_podman_pushed(podman_pushed, run_pbox):
    ref, image_id = podman_pushed
    run_pbox("pull", "-q", ref)
    assert pbox_id(run_pbox, ref) == image_id
    assert run_pbox("run", "--rm", ref).stdout == "written-by-podman\n"
    r = run_pbox("run", "--rm", ref, "sh", "-c", "test -e /var/spool || echo gone")
    assert r.stdout == "gone\n"


def test_pbox_builds_from_what_podman_pushed(podman_pushed, podman, run_pbox,  # noqa: F811
                                            tmp_path):
    ref, _ = podman_pushed
    tag = "interop/on-podman:1"
    build(run_pbox, tmp_path, ref, tag)
    r = run_pbox("run", "--rm", tag, "cat", "/podman.txt", "/work/run.txt")
    assert r.stdout == "written-by-podman\nbuilt-by-pbox\n"
