"""Runtime benchmarks: pbox and rootless podman running busybox containers, side by side.

    python3 bench/bench_run.py [--runs N] [--pbox 'CMD'] [--tmpdir DIR] [--markdown]

Cases (pbox and podman alternate; both stores hold the busybox image before timing):

* ``run --rm``: ``run --rm --network none busybox true``.  Target: pbox <= 0.35x podman.
* ``run --rm`` (default network): ``run --rm busybox true`` with each tool's default
  rootless network.  Target: pbox <= 0.4x podman.
* ``run -d + stop + rm``: ``run -d --name N --network none busybox sleep 1000``, then
  ``stop -t 0 N``, then ``rm N``, timed as one sequence.  Target <= 0.4x.
* ``32 x run --rm (parallel)``: 32 ``run --rm --network none busybox sleep 1`` started at
  once; wall time until the last exits.  Target: <= 2 s (for both tools).
* peak RSS of ``run --rm ... true`` over the whole process tree (see
  ``common.tree_peak_rss``), and GNU time's ``%M`` of the top process.  Target <= 0.6x.
* RSS of the monitor of one detached container: pbox's ``MonitorPid`` (state.json),
  podman's conmon (``.State.ConmonPid``); ``VmRSS`` from /proc.
* ``python -X importtime -m pbox run --rm ...``: whether any of ``NOT_IMPORTED`` is
  imported (target: none), and the top 10 imports by cumulative time.

The 1-minute load average is printed at the start and at the end.  Started as root, the
script builds the busybox image cache, hands it to ``--user`` (default pboxtest) and runs
itself again as that user.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common
from common import BUSYBOX_REPO, Case, Cmd, Session, Tools, log

NOT_IMPORTED = ("requests", "urllib3", "zstandard", "gzip", "zlib", "pbox.oci.registry",
                "pbox.oci.regsession")
RSS_TARGET = 0.6
PARALLEL = 32


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(p, runs=5)
    p.add_argument("--parallel-runs", type=int, default=3,
                   help=f"repetitions of the {PARALLEL} parallel runs per tool (default 3)")
    p.add_argument("--only", action="append",
                   choices=("run", "network", "lifecycle", "parallel", "rss", "monitor",
                            "imports"),
                   help="run only these groups (repeatable)")
    return p.parse_args(argv)


# -- the cases ----------------------------------------------------------------------------------

def run_rm_case(t: Tools, runs: int) -> Case:
    return Case("run --rm busybox true",
                Cmd(t.run_rm("pbox", "true"), t.env["pbox"]),
                Cmd(t.run_rm("podman", "true"), t.env["podman"]),
                target=0.35, runs=runs, warmup=2)


def run_rm_network_case(t: Tools, runs: int) -> Case:
    """The same with each tool's default rootless network (pbox: pasta; podman 4:
    slirp4netns), the networking issue's target."""
    def side(tool: str) -> Cmd:
        return t.cmd(tool, "run", "--rm", t.ref, "true")

    return Case("run --rm busybox true (default network)", side("pbox"), side("podman"),
                target=0.4, runs=runs, warmup=2)


def lifecycle_case(t: Tools, runs: int) -> Case:
    def side(tool: str) -> Cmd:
        name = f"bench-seq-{tool}"
        return t.cmd(tool, "run", "-d", "--name", name, "--network", "none", t.ref,
                     "sleep", "1000",
                     steps=[t.argv(tool, "stop", "-t", "0", name), t.argv(tool, "rm", name)])

    return Case("run -d + stop -t 0 + rm", side("pbox"), side("podman"), target=0.4,
                runs=runs, warmup=1)


def parallel_case(t: Tools, runs: int) -> Case:
    return Case(f"{PARALLEL} x run --rm sleep 1 (parallel)",
                Cmd(t.run_rm("pbox", "sleep", "1"), t.env["pbox"], parallel=PARALLEL),
                Cmd(t.run_rm("podman", "sleep", "1"), t.env["podman"], parallel=PARALLEL),
                budget=2.0, runs=runs, warmup=1)


def rss_tree(t: Tools, runs: int) -> dict:
    """Peak RSS of ``run --rm ... true``: tree sum and GNU time's %M, alternating."""
    out = {tool: {"tree": [], "top": [], "gnu_time": []} for tool in ("pbox", "podman")}
    for rep in range(runs):
        order = ("pbox", "podman") if rep % 2 == 0 else ("podman", "pbox")
        for tool in order:
            argv = t.run_rm(tool, "true")
            detail: dict = {}
            tree, top = common.tree_peak_rss(argv, t.env[tool], detail=detail)
            if rep < 2:
                log(f"rss: {tool}'s tree: " + ", ".join(
                    f"{name} {kib} KiB" for name, kib in detail.values()))
            out[tool]["tree"].append(tree)
            out[tool]["top"].append(top)
            out[tool]["gnu_time"].append(
                common.run_once(argv, t.env[tool], exact_rss=True).maxrss_kib)
        log(f"rss: run {rep + 1}/{runs}: tree sum pbox {out['pbox']['tree'][-1]} KiB, "
            f"podman {out['podman']['tree'][-1]} KiB")
    return out


def monitor_rss(t: Tools, runs: int) -> dict:
    """VmRSS of the process that watches one detached ``sleep 1000`` container."""
    out = {"pbox": [], "podman": []}
    for rep in range(runs):
        order = ("pbox", "podman") if rep % 2 == 0 else ("podman", "pbox")
        for tool in order:
            cid = t.output(tool, "run", "-d", "--network", "none", t.ref, "sleep", "1000")
            cid = cid.splitlines()[-1].strip()
            try:
                time.sleep(0.5)  # let the monitor settle after its start-up
                pid = monitor_pid(t, tool, cid)
                rss = common.proc_status_kib(pid, "VmRSS")
                if rss is None:
                    raise common.BenchError(f"{tool}: monitor {pid} of {cid} is gone")
                out[tool].append(rss)
            finally:
                t.output(tool, "stop", "-t", "0", cid)
                t.output(tool, "rm", cid)
        log(f"monitor: run {rep + 1}/{runs}: pbox {out['pbox'][-1]} KiB, "
            f"podman {out['podman'][-1]} KiB")
    return out


def monitor_pid(t: Tools, tool: str, cid: str) -> int:
    if tool == "podman":
        return int(t.output("podman", "inspect", "--format", "{{.State.ConmonPid}}", cid))
    cdir = os.path.join(t.proot, "containers")
    match = [d for d in os.listdir(cdir) if d.startswith(cid)]
    if len(match) != 1:
        raise common.BenchError(f"pbox: no single container directory for {cid}")
    with open(os.path.join(cdir, match[0], "state.json")) as f:
        return int(json.load(f)["MonitorPid"])


def import_times(t: Tools, pbox: list, runs: int = 3) -> dict:
    """``-X importtime`` of ``pbox run --rm ... true``; the last of ``runs`` runs."""
    if not (len(pbox) >= 3 and pbox[1] == "-m" and pbox[2] == "pbox"):
        log("imports: skipped (the pbox command is not 'PYTHON -m pbox')")
        return {}
    argv = t.run_rm("pbox", "true")
    argv = [argv[0], "-X", "importtime"] + argv[1:]
    for _ in range(runs):
        proc = subprocess.run(argv, env=t.env["pbox"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise common.BenchError(f"exit {proc.returncode}: importtime run\n"
                                    f"{proc.stderr[-2000:]}")
    modules = []  # (cumulative us, self us, name)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [x.strip() for x in line[len("import time:"):].split("|")]
        if not parts[0].isdigit():
            continue  # the header
        modules.append((int(parts[1]), int(parts[0]), parts[2]))
    names = {m[2] for m in modules}
    return {"imported": [n for n in NOT_IMPORTED if n in names],
            "top": sorted(modules, reverse=True)[:10], "count": len(modules),
            "total_us": sum(m[1] for m in modules)}


# -- output -------------------------------------------------------------------------------------

def med(xs) -> int:
    return int(statistics.median(xs))


def rss_table(rss: dict, monitor: dict) -> tuple:
    headers = ["memory", "runs", "pbox (median, min-max)", "podman (median, min-max)",
               "pbox/podman", "target", "met?"]
    rows = []

    def row(label, p, q, target=None):
        ratio = med(p) / med(q)
        rows.append([label, str(len(p)),
                     f"{common.fmt_kib(med(p))} ({common.fmt_kib(min(p))}-"
                     f"{common.fmt_kib(max(p))})",
                     f"{common.fmt_kib(med(q))} ({common.fmt_kib(min(q))}-"
                     f"{common.fmt_kib(max(q))})",
                     f"{ratio:.2f}x", "-" if target is None else f"<= {target:g}x",
                     "-" if target is None else ("yes" if ratio <= target else "NO")])

    if rss:
        row("run --rm: peak RSS summed over the process tree",
            rss["pbox"]["tree"], rss["podman"]["tree"], RSS_TARGET)
        row("run --rm: peak RSS of the top process (/proc VmHWM)",
            rss["pbox"]["top"], rss["podman"]["top"])
        row("run --rm: GNU time %M (largest single process)",
            rss["pbox"]["gnu_time"], rss["podman"]["gnu_time"])
    if monitor:
        row("monitor of a detached container (VmRSS)", monitor["pbox"], monitor["podman"])
    return headers, rows


def print_imports(imports: dict, markdown: bool) -> None:
    if not imports:
        return
    bad = imports["imported"]
    print(f"pbox run --rm: {imports['count']} modules imported "
          f"(sum of self times {imports['total_us'] / 1000:.0f} ms under -X importtime)")
    print(f"of {', '.join(NOT_IMPORTED)}: imported: {', '.join(bad) if bad else 'none'} "
          f"(target: none; {'met' if not bad else 'NOT met'})")
    print()
    rows = [[name, f"{cum / 1000:.1f}", f"{own / 1000:.1f}"]
            for cum, own, name in imports["top"]]
    print(common.format_table(["module (top 10 cumulative)", "cumulative ms", "self ms"],
                              rows, markdown=markdown))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    common.as_measuring_user(args, argv, __file__)
    groups = set(args.only or ("run", "network", "lifecycle", "parallel", "rss", "monitor",
                               "imports"))
    cases, rss, monitor, imports = [], {}, {}, {}
    with Session(args) as s:
        busybox = s.image("busybox")
        t = s.tools(pull=[s.push_image(busybox, BUSYBOX_REPO)])
        if "run" in groups:
            cases.append(run_rm_case(t, args.runs))
        if "network" in groups:
            cases.append(run_rm_network_case(t, args.runs))
        if "lifecycle" in groups:
            cases.append(lifecycle_case(t, args.runs))
        if "parallel" in groups:
            cases.append(parallel_case(t, args.parallel_runs))
        common.run_cases(cases)
        if "monitor" in groups:
            monitor = monitor_rss(t, args.runs)
        if "rss" in groups:
            rss = rss_tree(t, args.runs)  # last: makes this process a child subreaper
        if "imports" in groups:
            imports = import_times(t, s.pbox)
    s.print_info(f"image: {busybox.describe()}")
    if cases:
        print(common.format_table(*common.table_rows(cases), markdown=args.markdown))
        for c in cases:
            if c.budget is not None:
                print(f"\n{c.name}: podman's median {common.fmt_seconds(c.median('podman'))}"
                      f" {'meets' if c.met('podman') else 'misses'} the same "
                      f"{common.fmt_seconds(c.budget)} budget")
        print()
    if rss or monitor:
        print(common.format_table(*rss_table(rss, monitor), markdown=args.markdown))
        print()
    print_imports(imports, args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            f.write(common.results_json(cases, {
                "load_average": s.load, "rss_kib": rss,
                "monitor_rss_kib": monitor,
                "imports": {k: v for k, v in imports.items()}}))
    return 0


if __name__ == "__main__":
    common.script_main(main)
