"""Build benchmarks: ``pbox build`` and rootless ``podman build`` side by side.

    python3 bench/bench_build.py [--runs N] [--pbox 'CMD'] [--tmpdir DIR] [--markdown]

Both tools build with their defaults (podman: buildah inside podman, intermediate
layers cached, with the runc/cgroupfs/overlay configuration of ``common.PodmanEnv``);
the bench busybox image is pulled into both stores before timing.  Cases (pbox and
podman alternate):

* ``3 steps, uncached``: ``FROM`` busybox, a ``RUN`` writing a file, a ``COPY`` of a
  10 MB file, with ``--no-cache``.  Target: pbox <= 0.5x podman's wall time.
* ``3 steps, fully cached``: the same Dockerfile again, every step from the cache.
  Target <= 0.25x.
* ``20 steps, one COPY changed``: a 20-instruction Dockerfile (ENV, WORKDIR, LABEL,
  RUN and COPY of small files); before every repetition (untimed) the file of the
  18th instruction, a COPY, gets new content, so the 17 instructions before it come
  from the cache and the last three run.  Target <= 0.4x.

Started as root, the script builds the busybox image cache and runs itself again as
``--user`` (default pboxtest).  See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import common
from common import BUSYBOX_REPO, Case, Cmd, Session, Tools

BIG_BYTES = 10 * 1024 * 1024
GROUPS = ("uncached", "cached", "steps")

SMALL = """\
FROM {base}
RUN echo built > /built.txt
COPY big.bin /big.bin
"""

# 20 instructions; the COPY of changed.txt is the 18th.
STEPS = """\
FROM {base}
ENV APP_HOME=/app APP_MODE=bench
WORKDIR /app
LABEL org.example.bench=steps
RUN echo one > /app/one.txt
COPY a.txt /app/a.txt
RUN cat /app/a.txt /app/one.txt > /app/both.txt
ENV STAGE=two
COPY b.txt /app/b.txt
RUN mkdir -p /app/data && echo data > /app/data/d.txt
COPY c.txt /app/c.txt
RUN wc -c /app/c.txt > /app/c.size
LABEL org.example.stage=three
COPY d.txt /app/d.txt
RUN ls /app > /app/listing.txt
ENV STAGE=four
RUN echo four > /app/four.txt
COPY changed.txt /app/changed.txt
RUN cat /app/changed.txt > /app/changed.copy
CMD ["sh"]
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(p, runs=5)
    p.add_argument("--only", action="append", choices=GROUPS,
                   help="run only these groups (repeatable)")
    return p.parse_args(argv)


def build_argv(t: Tools, tool: str, ctx: str, tag: str, *extra: str) -> list:
    return t.argv(tool, "build", *extra, "-t", tag, ctx)


def small_context(scratch, base: str) -> str:
    ctx = scratch.new_dir("ctx-small")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(SMALL.format(base=base))
    with open(os.path.join(ctx, "big.bin"), "wb") as f:
        f.write(os.urandom(BIG_BYTES))
    return ctx


def steps_context(scratch, base: str) -> str:
    ctx = scratch.new_dir("ctx-steps")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(STEPS.format(base=base))
    for name in ("a", "b", "c", "d", "changed"):
        with open(os.path.join(ctx, f"{name}.txt"), "w") as f:
            f.write(f"{name}\n" * 100)
    return ctx


def uncached_case(t: Tools, ctx: str, runs: int) -> Case:
    def side(tool):
        return Cmd(build_argv(t, tool, ctx, "bench/small:uncached", "--no-cache"),
                   t.env[tool])

    return Case("3 steps, uncached (--no-cache)", side("pbox"), side("podman"),
                target=0.5, runs=runs)


def cached_case(t: Tools, ctx: str, runs: int) -> Case:
    def side(tool):
        return Cmd(build_argv(t, tool, ctx, "bench/small:cached"), t.env[tool])

    return Case("3 steps, fully cached", side("pbox"), side("podman"), target=0.25,
                runs=runs, warmup=1)


def steps_case(t: Tools, ctx: str, runs: int) -> Case:
    """Each tool gets its own copy of the context, so changing the file for one tool's
    repetition does not touch the other's cache."""
    changed = {"n": 0}

    def side(tool):
        mine = os.path.join(os.path.dirname(ctx), f"ctx-steps-{tool}")
        os.mkdir(mine)
        for name in os.listdir(ctx):
            with open(os.path.join(ctx, name), "rb") as src, \
                    open(os.path.join(mine, name), "wb") as dst:
                dst.write(src.read())

        def setup():
            changed["n"] += 1
            with open(os.path.join(mine, "changed.txt"), "w") as f:
                f.write(f"change {changed['n']} {os.urandom(8).hex()}\n")

        return Cmd(build_argv(t, tool, mine, "bench/steps:latest"), t.env[tool], setup)

    return Case("20 steps, COPY at step 18 changed", side("pbox"), side("podman"),
                target=0.4, runs=runs, warmup=1)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    groups = set(args.only or GROUPS)
    common.as_measuring_user(args, argv, __file__)
    cases = []
    with Session(args) as s:
        busybox = s.image("busybox")
        base = s.push_image(busybox, BUSYBOX_REPO)
        t = s.tools(pull=[base])
        if groups & {"uncached", "cached"}:
            ctx = small_context(s.scratch, base)
            if "uncached" in groups:
                cases.append(uncached_case(t, ctx, args.runs))
            if "cached" in groups:
                cases.append(cached_case(t, ctx, args.runs))
        if "steps" in groups:
            cases.append(steps_case(t, steps_context(s.scratch, base), args.runs))
        common.run_cases(cases)
    s.print_info(f"base image: {busybox.describe()}")
    common.print_table(cases, markdown=args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            f.write(common.results_json(cases))
    return 0


if __name__ == "__main__":
    common.script_main(main)
