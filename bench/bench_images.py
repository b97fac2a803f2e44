"""Image benchmarks: pbox and rootless podman side by side in one run.

    python3 bench/bench_images.py [--runs N] [--pbox 'CMD'] [--markdown] [--json FILE]

Cases (pbox and podman alternate, a fresh temp store per repetition for the pulls; the
run root, which holds pbox's pause process, is kept from one repetition to the next, as
podman keeps its pause process in the user's runtime directory):

* ``pull debian (cold)``: a one-layer Debian minbase (about 50 MB gzipped) from a local
  ``docker-registry`` into an empty store.  Target: pbox <= 0.3x podman's wall time.
* ``pull busybox (cold)``: a one-layer static busybox image, same conditions.
* ``--version``: target <= 1.2x.
* ``images``: listing a store holding the two images under five names.  Target <= 1.0x.

Peak RSS of the pulls is reported for both tools.  Started as root, the script builds the
image cache (debootstrap needs root) and then runs itself again as ``--user`` (default
pboxtest), since both tools are measured rootless.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys

import common
from common import BUSYBOX_REPO, DEBIAN_REPO, Case, Cmd, PodmanEnv, Session


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(p, runs=5)
    p.add_argument("--fast-runs", type=int, default=20,
                   help="repetitions of --version and images per tool (default 20)")
    common.add_image_kind_arg(p)
    p.add_argument("--only", action="append", choices=("pull", "version", "images"),
                   help="run only these groups (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    common.as_measuring_user(args, argv, __file__, debian=args.image_kind)
    groups = set(args.only or ("pull", "version", "images"))
    with Session(args) as s:
        debian = s.image("debian", args.image_kind)
        busybox = s.image("busybox")
        debian_ref = s.push_image(debian, DEBIAN_REPO)
        busybox_ref = s.push_image(busybox, BUSYBOX_REPO)
        xenv, penv, pbox = s.xenv, s.penv, s.pbox
        # A .pyz unpacks its Python part to the user cache on its first run (any
        # command but --version): a user pays that once, so it happens here, untimed.
        common.run_once(pbox + ["--help"], xenv)

        cases = []
        if "pull" in groups:
            for label, ref in ((f"pull {debian.name} (cold)", debian_ref),
                               ("pull busybox (cold)", busybox_ref)):
                cases.append(pull_case(label, ref, s, args.runs))
        if "version" in groups:
            cases.append(Case("--version", Cmd(pbox + ["--version"], xenv),
                              Cmd(["podman", "--version"], penv), target=1.2,
                              runs=args.fast_runs, warmup=2))
        if "images" in groups:
            cases.append(images_case(s, debian_ref, busybox_ref, args.fast_runs))
        common.run_cases(cases)

    s.print_info(f"images: {debian.describe()}; {busybox.describe()}")
    common.print_table(cases, markdown=args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            f.write(common.results_json(cases, {
                "images": [debian.__dict__, busybox.__dict__]}))
    return 0


def pull_case(label, ref, s: Session, runs) -> Case:
    pbox, xenv, penv, scratch = s.pbox, s.xenv, s.penv, s.scratch
    proot, prun = scratch.new_dir("pbox-root"), scratch.new_dir("pbox-run")
    qroot, qrun = scratch.new_dir("podman-root"), scratch.new_dir("podman-run")
    s.runroots.append(prun)  # its pause process is ended with the session

    def fresh_pbox():
        scratch.fresh(proot)  # the run root stays: see the module doc

    def fresh_podman():
        scratch.fresh(qroot)
        scratch.fresh(qrun)

    return Case(
        label,
        Cmd(pbox + ["--root", proot, "--runroot", prun, "pull", ref], xenv, fresh_pbox),
        Cmd(PodmanEnv.argv(qroot, qrun) + ["pull", "--tls-verify=false", ref], penv,
            fresh_podman),
        target=0.3, runs=runs, rss=True)


def images_case(s: Session, debian_ref, busybox_ref, runs) -> Case:
    """Two images under five names in each store, then ``images`` on the warm store."""
    pbox, xenv, penv, scratch = s.pbox, s.xenv, s.penv, s.scratch
    proot, prun = scratch.new_dir("pbox-root"), scratch.new_dir("pbox-run")
    s.runroots.append(prun)
    qroot, qrun = scratch.new_dir("podman-root"), scratch.new_dir("podman-run")
    p = pbox + ["--root", proot, "--runroot", prun]
    q = PodmanEnv.argv(qroot, qrun)
    tags = [(busybox_ref, "bench/alias:1"), (busybox_ref, "bench/alias:2"),
            (debian_ref, "bench/debian-copy:v2")]
    for ref in (debian_ref, busybox_ref):
        common.run_once(p + ["pull", "-q", ref], xenv)
        common.run_once(q + ["pull", "-q", "--tls-verify=false", ref], penv)
    for src, dst in tags:
        common.run_once(p + ["tag", src, dst], xenv)
        common.run_once(q + ["tag", src, dst], penv)
    return Case("images (2 images, 5 names)", Cmd(p + ["images"], xenv),
                Cmd(q + ["images"], penv), target=1.0, runs=runs, warmup=2)


if __name__ == "__main__":
    common.script_main(main)
