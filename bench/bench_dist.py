"""Distribution benchmarks: push, re-push, save + load; pbox and rootless podman side by side.

    python3 bench/bench_dist.py [--runs N] [--pbox 'CMD'] [--tmpdir DIR] [--markdown]

Each tool builds its own copy of a three-layer image with its own ``build`` (untimed):
``FROM`` the bench busybox image, a ``RUN`` writing a small file, a ``COPY`` of a
10 MB file of random bytes.  Cases (pbox and podman alternate):

* ``push (new 10 MB layer)``: before every repetition (untimed) the 10 MB file gets new
  random content and the image is built again, and the push goes to a repository that
  did not exist, so neither tool can skip or mount the new layer; the busybox layer can
  be mounted from ``bench/busybox``.  Target: pbox <= 0.8x podman's wall time.
* ``re-push (all blobs exist)``: the same image to the same tag again.  Target <= 0.5x.
* ``save + load``: ``save -o FILE`` of the Debian-sized image (pulled before timing),
  then ``load -i FILE`` into an empty store, timed as one sample.  Target <= 0.8x.

Started as root, the script builds the image cache and runs itself again as ``--user``
(default pboxtest).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import common
from common import BUSYBOX_REPO, DEBIAN_REPO, Case, Cmd, Session, Tools

LAYER_BYTES = 10 * 1024 * 1024
IMAGE = "bench/dist:latest"
GROUPS = ("push", "repush", "save")

DOCKERFILE = """\
FROM {base}
RUN echo built > /built.txt
COPY layer.bin /layer.bin
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(p, runs=5)
    common.add_image_kind_arg(p)
    p.add_argument("--only", action="append", choices=GROUPS,
                   help="run only these groups (repeatable)")
    return p.parse_args(argv)


class Builds:
    """A build context per tool; ``rebuild(tool)`` puts new random bytes in the 10 MB
    file and builds ``IMAGE`` with that tool's own ``build``."""

    def __init__(self, t: Tools, scratch, base: str):
        self.t = t
        self.ctx = {}
        for tool in ("pbox", "podman"):
            ctx = self.ctx[tool] = scratch.new_dir(f"ctx-{tool}")
            with open(os.path.join(ctx, "Dockerfile"), "w") as f:
                f.write(DOCKERFILE.format(base=base))

    def rebuild(self, tool: str) -> None:
        with open(os.path.join(self.ctx[tool], "layer.bin"), "wb") as f:
            f.write(os.urandom(LAYER_BYTES))
        self.t.output(tool, "build", "-q", "-t", IMAGE, self.ctx[tool])


def push_argv(t: Tools, tool: str, dest: str) -> list:
    if tool == "podman":
        return t.argv(tool, "push", "--tls-verify=false", IMAGE, dest)
    return t.argv(tool, "push", "-q", IMAGE, dest)


def push_case(t: Tools, builds: Builds, host: str, runs: int) -> Case:
    counter = {"n": 0}

    def side(tool: str) -> Cmd:
        argv = push_argv(t, tool, "")

        def setup():
            builds.rebuild(tool)
            counter["n"] += 1
            argv[-1] = f"{host}/dist/fresh-{tool}-{counter['n']}:latest"

        return Cmd(argv, t.env[tool], setup)

    return Case("push (new 10 MB layer)", side("pbox"), side("podman"), target=0.8,
                runs=runs)


def repush_case(t: Tools, builds: Builds, host: str, runs: int) -> Case:
    def side(tool: str) -> Cmd:
        builds.rebuild(tool)
        return Cmd(push_argv(t, tool, f"{host}/dist/again-{tool}:latest"), t.env[tool])

    return Case("re-push (all blobs exist)", side("pbox"), side("podman"), target=0.5,
                runs=runs, warmup=1)


def save_load_case(t: Tools, s: Session, ref: str, runs: int) -> Case:
    """``save -o FILE`` from the store holding the image, ``load -i FILE`` into an
    empty one; the file and the second store are removed before each repetition."""

    scratch = s.scratch

    def side(tool: str) -> Cmd:
        archive = os.path.join(scratch.new_dir(f"archive-{tool}"), "image.tar")
        root, run = scratch.new_dir(f"{tool}-load-root"), scratch.new_dir(f"{tool}-load-run")
        if tool == "pbox":
            load = s.pbox + ["--root", root, "--runroot", run]
            s.runroots.append(run)
        else:
            load = common.PodmanEnv.argv(root, run)

        def setup():
            if os.path.exists(archive):
                os.unlink(archive)
            scratch.fresh(root)
            if tool == "podman":
                scratch.fresh(run)
            # pbox's run root (with its pause process) stays, as podman's pause process
            # stays in the user's runtime directory: an empty store, not a new login

        return Cmd(t.argv(tool, "save", "-o", archive, ref), t.env[tool], setup,
                   steps=[load + ["load", "-q", "-i", archive]])

    return Case("save + load (debian)", side("pbox"), side("podman"), target=0.8,
                runs=runs)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    groups = set(args.only or GROUPS)
    common.as_measuring_user(args, argv, __file__,
                             debian=args.image_kind if "save" in groups else None)
    cases = []
    with Session(args) as s:
        busybox = s.image("busybox")
        base = s.push_image(busybox, BUSYBOX_REPO)
        t = s.tools(pull=[base])
        host = s.registry.host
        lines = [f"image: {busybox.describe()}"]
        if groups & {"push", "repush"}:
            builds = Builds(t, s.scratch, base)
            if "push" in groups:
                cases.append(push_case(t, builds, host, args.runs))
            if "repush" in groups:
                cases.append(repush_case(t, builds, host, args.runs))
        if "save" in groups:
            debian = s.image("debian", args.image_kind)
            ref = s.push_image(debian, DEBIAN_REPO)
            t.pull(ref)
            cases.append(save_load_case(t, s, ref, args.runs))
            lines.append(f"save/load image: {debian.describe()}")
        for case in cases:
            common.run_case(case)
    s.print_info(*lines)
    common.print_table(cases, markdown=args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            f.write(common.results_json(cases))
    return 0


if __name__ == "__main__":
    common.script_main(main)
