"""Image benchmarks: pbox and rootless podman side by side in one run.

    python3 bench/bench_images.py [--runs N] [--pbox 'CMD'] [--markdown] [--json FILE]

Cases (pbox and podman alternate, a fresh temp store per repetition for the pulls):

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
import os
import pwd
import sys

import common
import testimages
from common import Case, Cmd, PodmanEnv, Registry, Scratch, log

DEBIAN_REPO = "bench/debian"
BUSYBOX_REPO = "bench/busybox"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5,
                   help="repetitions of each pull per tool (default 5)")
    p.add_argument("--fast-runs", type=int, default=20,
                   help="repetitions of --version and images per tool (default 20)")
    p.add_argument("--pbox", metavar="CMD",
                   help="the pbox command to time, e.g. 'python3 dist/pbox.pyz' (env "
                        "PBOX_BENCH_CMD; default: dist/pbox.pyz when it is up to date, "
                        "else python -m pbox from this checkout)")
    p.add_argument("--user", default=None,
                   help=f"when started as root, run the measurements as this user "
                        f"(default {common.DEFAULT_USER})")
    p.add_argument("--cache", metavar="DIR", help="image cache (default "
                   "~/.cache/pbox-bench of the measuring user)")
    p.add_argument("--image-kind", choices=("auto", "debootstrap", "synthetic"),
                   default="auto", help="how the Debian-sized image is made (default: "
                   "debootstrap when possible, else a synthetic tree)")
    p.add_argument("--only", action="append", choices=("pull", "version", "images"),
                   help="run only these groups (repeatable)")
    p.add_argument("--tmpdir", help="where the temp stores go (default: $TMPDIR or /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, stores)")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    return p.parse_args(argv)


def prepare_as_root(args, argv) -> None:
    """Build the image cache as root (debootstrap), hand it to the user, run as them."""
    user = args.user or common.DEFAULT_USER
    pw = pwd.getpwnam(user)
    cache = args.cache or os.path.join(pw.pw_dir, ".cache", "pbox-bench")
    kind = "debootstrap" if args.image_kind == "auto" else args.image_kind
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    try:
        testimages.cached_image(cache, "debian", kind)
    except common.BenchError as e:
        if args.image_kind != "auto":
            raise
        log(f"no debootstrap image ({e}); the run will use a synthetic tree")
    testimages.cached_image(cache, "busybox", "busybox")
    home_cache = os.path.dirname(cache)
    for path in (home_cache, cache):
        if os.stat(path).st_uid == 0 and path.startswith(pw.pw_dir + os.sep):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    testimages.chown_tree(cache, pw.pw_uid, pw.pw_gid)
    rest, skip = [], False
    for a in argv:
        if skip or a.startswith("--cache="):
            skip = False
            continue
        if a == "--cache":
            skip = True
            continue
        rest.append(a)
    common.reexec_as(user, [os.path.abspath(__file__), *rest, "--cache", cache])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if os.getuid() == 0:
        prepare_as_root(args, argv)  # does not return
    groups = set(args.only or ("pull", "version", "images"))
    pbox, pbox_env = common.pbox_command(args.pbox)
    common.check_interpreter(pbox)
    for tool in ("podman", "skopeo", "docker-registry"):
        common.require_tool(tool)

    cache = args.cache or testimages.default_cache_dir()
    debian = testimages.cached_image(cache, "debian", args.image_kind)
    busybox = testimages.cached_image(cache, "busybox", "busybox")

    scratch = Scratch(args.tmpdir, keep=args.keep)
    runtime_dir = scratch.new_dir("xdg-run")
    os.chmod(runtime_dir, 0o700)
    podman = PodmanEnv(scratch.new_dir("podman-conf"), runtime_dir)
    registry = Registry(scratch.new_dir("registry"))
    try:
        base = common.base_env(runtime_dir)
        penv = podman.env(base)
        xenv = common.prepare_pbox(pbox, dict(base, **pbox_env), scratch.path)
        info = common.machine_info(pbox, xenv)
        info["podman config"] = ("runtime=runc, cgroup_manager=cgroupfs, "
                                 "storage driver=overlay")
        info["stores on"] = common.fs_type(scratch.path)
        for k, v in info.items():
            log(f"{k}: {v}")
        registry.start()
        log(f"registry at {registry.host}")
        for img, repo in ((debian, DEBIAN_REPO), (busybox, BUSYBOX_REPO)):
            testimages.push(img, f"{registry.host}/{repo}:{img.tag}", penv, podman.policy)
            log(f"pushed {img.describe()}")
        debian_ref = f"{registry.host}/{DEBIAN_REPO}:{debian.tag}"
        busybox_ref = f"{registry.host}/{BUSYBOX_REPO}:{busybox.tag}"

        cases = []
        if "pull" in groups:
            for label, ref in ((f"pull {debian.name} (cold)", debian_ref),
                               ("pull busybox (cold)", busybox_ref)):
                cases.append(pull_case(label, ref, pbox, xenv, penv, scratch, args.runs))
        if "version" in groups:
            cases.append(Case("--version", Cmd(pbox + ["--version"], xenv),
                              Cmd(["podman", "--version"], penv), target=1.2,
                              runs=args.fast_runs, warmup=2))
        if "images" in groups:
            cases.append(images_case(pbox, xenv, penv, scratch, debian_ref, busybox_ref,
                                     args.fast_runs))
        common.run_cases(cases)
    finally:
        registry.stop()
        podman.stop_pause_process()
        scratch.close()

    print()
    for k, v in info.items():
        print(f"{k}: {v}")
    print(f"images: {debian.describe()}; {busybox.describe()}")
    print()
    common.print_table(cases, markdown=args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            f.write(common.results_json(cases, {
                "images": [debian.__dict__, busybox.__dict__]}))
    return 0


def pull_case(label, ref, pbox, xenv, penv, scratch, runs) -> Case:
    proot, prun = scratch.new_dir("pbox-root"), scratch.new_dir("pbox-run")
    qroot, qrun = scratch.new_dir("podman-root"), scratch.new_dir("podman-run")

    def fresh_pbox():
        scratch.fresh(proot)
        scratch.fresh(prun)

    def fresh_podman():
        scratch.fresh(qroot)
        scratch.fresh(qrun)

    return Case(
        label,
        Cmd(pbox + ["--root", proot, "--runroot", prun, "pull", ref], xenv, fresh_pbox),
        Cmd(PodmanEnv.argv(qroot, qrun) + ["pull", "--tls-verify=false", ref], penv,
            fresh_podman),
        target=0.3, runs=runs, rss=True)


def images_case(pbox, xenv, penv, scratch, debian_ref, busybox_ref, runs) -> Case:
    """Two images under five names in each store, then ``images`` on the warm store."""
    proot, prun = scratch.new_dir("pbox-root"), scratch.new_dir("pbox-run")
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
    try:
        sys.exit(main())
    except common.BenchError as e:
        sys.stderr.write(f"bench: {e}\n")
        sys.exit(1)
