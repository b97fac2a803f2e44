"""Shared pieces of the benchmarks: a runner, a registry, podman's setup, a table.

Benchmarks are not tests: nothing here asserts on a time.  A benchmark script builds
``Case``s (one command for pbox, one for podman, a setup run before each, a target
ratio), hands them to :func:`run_cases`, which alternates the two tools repetition by
repetition, and prints medians, ratios and peak RSS with :func:`print_table`.

Only the standard library is used, so any python3 (3.9+) can run the benchmarks; the
*measured* pbox command is chosen separately (see :func:`pbox_command`).

Peak RSS comes from ``wait4()`` on the command's process: the kernel reports the
largest resident set of that process and of every descendant it reaped, so the
user-namespace child pbox forks and the re-executed podman are both covered.  It is
the peak of the biggest single process of the tree, not a sum over processes.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PBOX_SOURCES = os.path.join(REPO, "pbox")
PBOX_PYZ = os.path.join(REPO, "dist", "pbox.pyz")

#: The user the benchmarks run as when started by root (the test suite's user).
DEFAULT_USER = "pboxtest"


class BenchError(RuntimeError):
    """A benchmark could not run (a tool missing, a command failing)."""


def log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BenchError(f"the benchmarks need {name!r} on PATH")
    return path


# -- running one command ----------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float
    maxrss_kib: int


def gnu_time() -> Optional[str]:
    """GNU time, if installed (package ``time``): a small process to fork from."""
    path = "/usr/bin/time"
    return path if os.access(path, os.X_OK) else None


def run_once(argv: Sequence[str], env: dict, cwd: Optional[str] = None,
             timeout: float = 1800.0, exact_rss: bool = False) -> Sample:
    """Run ``argv`` to completion; wall time and peak RSS of its process tree.

    stdout goes to /dev/null (its cost is the command's, not ours); stderr is kept in a
    temp file and shown if the command fails.

    A forked child starts with its parent's resident pages, and the kernel's high-water
    mark keeps them after ``exec``: ``ru_maxrss`` of a command spawned from this Python
    process never reads below this process's own RSS (~20 MiB).  With ``exact_rss`` the
    command is started through GNU time (``-f %M``), whose own RSS is ~1 MiB, and the
    figure comes from there; that adds about a millisecond to the wall time, so it is
    meant for the slow cases.
    """
    rss_file = None
    argv = list(argv)
    if exact_rss and gnu_time():
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [gnu_time(), "-q", "-f", "%M", "-o", rss_file, "--", *argv]
    try:
        sample = _run(argv, env, cwd, timeout)
        if rss_file:
            with open(rss_file) as f:
                lines = [x for x in f.read().split() if x.isdigit()]
            if lines:
                sample.maxrss_kib = int(lines[-1])
        return sample
    finally:
        if rss_file:
            os.unlink(rss_file)


def _run(argv: list, env: dict, cwd: Optional[str], timeout: float) -> Sample:
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode == -signal.SIGKILL and elapsed >= timeout:
            raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(argv)}")
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"exit {proc.returncode}: {shlex.join(argv)}\n{tail}")
    return Sample(elapsed, usage.ru_maxrss)


def samples(argv: Sequence[str], env: dict, n: int, setup: Optional[Callable] = None,
            warmup: int = 0, cwd: Optional[str] = None) -> list:
    """Run ``argv`` ``n`` times (``setup()`` before each, untimed); the ``Sample``s."""
    for _ in range(warmup):
        if setup:
            setup()
        run_once(argv, env, cwd)
    out = []
    for _ in range(n):
        if setup:
            setup()
        out.append(run_once(argv, env, cwd))
    return out


def median_time(argv: Sequence[str], env: dict, n: int, setup: Optional[Callable] = None,
                warmup: int = 0, cwd: Optional[str] = None) -> float:
    """Median wall time (seconds) of ``n`` runs of one command.  For two tools side by
    side use :func:`run_cases`, which alternates them."""
    return statistics.median(s.seconds for s in samples(argv, env, n, setup, warmup, cwd))


def peak_rss(argv: Sequence[str], env: dict, setup: Optional[Callable] = None,
             n: int = 1, cwd: Optional[str] = None) -> int:
    """Largest peak RSS (KiB) over ``n`` runs of ``argv``."""
    most = 0
    for _ in range(n):
        if setup:
            setup()
        most = max(most, run_once(argv, env, cwd, exact_rss=True).maxrss_kib)
    return most


# -- comparing two tools ----------------------------------------------------------------------

@dataclass
class Cmd:
    """One tool's side of a case.

    ``steps``: more commands run after ``argv``, one after the other, timed together
    with it as one sample (its RSS is the largest of the steps').  ``parallel``: start
    ``argv`` this many times at once; the sample is the wall time until the last exits.
    """

    argv: list
    env: dict
    setup: Optional[Callable] = None  # run before every repetition, not timed
    cwd: Optional[str] = None
    steps: list = field(default_factory=list)
    parallel: int = 1


def run_cmd(cmd: Cmd, exact_rss: bool = False) -> Sample:
    """One sample of ``cmd`` (its setup is the caller's business)."""
    if cmd.parallel > 1:
        return run_parallel(cmd.argv, cmd.env, cmd.parallel, cmd.cwd)
    total = run_once(cmd.argv, cmd.env, cmd.cwd, exact_rss=exact_rss)
    for argv in cmd.steps:
        s = run_once(argv, cmd.env, cmd.cwd, exact_rss=exact_rss)
        total = Sample(total.seconds + s.seconds, max(total.maxrss_kib, s.maxrss_kib))
    return total


def run_parallel(argv: Sequence[str], env: dict, n: int, cwd: Optional[str] = None,
                 timeout: float = 600.0) -> Sample:
    """Start ``n`` copies of ``argv`` at once; wall time until the last one exits.

    Every copy must exit 0.  The RSS is the largest ``ru_maxrss`` of the copies.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        procs = [subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err)
                 for _ in range(n)]
        rss, failed = 0, []
        for proc in procs:
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except ChildProcessError:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            rss = max(rss, usage.ru_maxrss)
            if proc.returncode != 0:
                failed.append(proc.returncode)
            if time.perf_counter() - start > timeout:
                for p in procs:
                    if p.returncode is None:
                        p.kill()
                raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(argv)}")
        elapsed = time.perf_counter() - start
        if failed:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"{len(failed)} of {n} copies failed (exit {failed[0]}): "
                             f"{shlex.join(argv)}\n{tail}")
    return Sample(elapsed, rss)


@dataclass
class Case:
    name: str
    pbox: Cmd
    podman: Cmd
    target: Optional[float] = None  # pbox/podman ratio of medians to stay at or under
    budget: Optional[float] = None  # seconds pbox's median stays at or under (absolute)
    runs: int = 5
    warmup: int = 0
    # report peak RSS in the table: measured through GNU time, in runs of their own
    # (up to RSS_RUNS a tool, after the timed ones): the wrapper adds ~2 ms to a run
    rss: bool = False
    samples: dict = field(default_factory=dict)  # tool -> [Sample]
    rss_samples: dict = field(default_factory=dict)  # tool -> [KiB], with rss

    def median(self, tool: str) -> float:
        return statistics.median(s.seconds for s in self.samples[tool])

    def spread(self, tool: str) -> tuple:
        secs = [s.seconds for s in self.samples[tool]]
        return min(secs), max(secs)

    def median_rss(self, tool: str) -> int:
        kib = self.rss_samples.get(tool) or [s.maxrss_kib for s in self.samples[tool]]
        return int(statistics.median(kib))

    def ratio(self) -> float:
        return self.median("pbox") / self.median("podman")

    def ratio_interval(self, level: float = 0.95, resamples: int = 2000) -> tuple:
        """A bootstrap interval of :meth:`ratio`: the repetitions (a pbox run and the
        podman run next to it) resampled with replacement, the ratio of the medians
        taken each time.  It tells how far the ratio moves with the spread of single
        runs; the drift of the machine between two benchmark runs comes on top (seen
        here: +-0.01 within a run of 40, 0.30-0.32 between runs).  Seeded: the same
        samples give the same interval."""
        import random

        pbox = [s.seconds for s in self.samples["pbox"]]
        podman = [s.seconds for s in self.samples["podman"]]
        n = min(len(pbox), len(podman))
        if n < 2:
            return self.ratio(), self.ratio()
        rng = random.Random(n)
        ratios = []
        for _ in range(resamples):
            picks = [rng.randrange(n) for _ in range(n)]
            ratios.append(statistics.median(pbox[i] for i in picks)
                          / statistics.median(podman[i] for i in picks))
        ratios.sort()
        tail = (1 - level) / 2
        return ratios[int(tail * (resamples - 1))], ratios[int((1 - tail) * (resamples - 1))]

    def met(self, tool: str = "pbox") -> Optional[bool]:
        if self.budget is not None:
            return self.median(tool) <= self.budget
        return None if self.target is None else self.ratio() <= self.target

    def target_text(self) -> str:
        if self.budget is not None:
            return f"<= {fmt_seconds(self.budget)}"
        return "-" if self.target is None else f"<= {self.target:g}x"


RSS_RUNS = 5


def run_case(case: Case) -> Case:
    """Run both tools ``case.runs`` times, alternating which goes first; then, for a
    case with ``rss``, up to ``RSS_RUNS`` more through GNU time for the peak RSS."""
    tools = {"pbox": case.pbox, "podman": case.podman}

    def sample(tool: str, exact_rss: bool = False) -> Sample:
        cmd = tools[tool]
        if cmd.setup:
            cmd.setup()
        return run_cmd(cmd, exact_rss=exact_rss)

    def order(rep: int) -> tuple:
        return ("pbox", "podman") if rep % 2 == 0 else ("podman", "pbox")

    for tool in ("pbox", "podman"):
        for _ in range(case.warmup):
            sample(tool)
    case.samples = {"pbox": [], "podman": []}
    for rep in range(case.runs):
        for tool in order(rep):
            case.samples[tool].append(sample(tool))
        log(f"{case.name}: run {rep + 1}/{case.runs}: "
            f"pbox {case.samples['pbox'][-1].seconds:.3f}s, "
            f"podman {case.samples['podman'][-1].seconds:.3f}s")
    case.rss_samples = {"pbox": [], "podman": []}
    for rep in range(min(case.runs, RSS_RUNS) if case.rss else 0):
        for tool in order(rep):
            case.rss_samples[tool].append(sample(tool, exact_rss=True).maxrss_kib)
    return case


def run_cases(cases: Sequence[Case]) -> list:
    return [run_case(c) for c in cases]


# -- process trees ----------------------------------------------------------------------------

def proc_status_kib(pid: int, key: str) -> Optional[int]:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/PID/status``; None when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _children(pid: int) -> list:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _descendants(pid: int) -> list:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _become_subreaper() -> None:
    """Orphans of our commands (a daemonizing conmon, pbox's monitor) come to us, so a
    walk from our own pid finds them."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def reap_orphans() -> None:
    """Collect exited orphans that came to us as a subreaper (never our Popen children
    in flight: only called between measurements)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def tree_peak_rss(argv: Sequence[str], env: dict, cwd: Optional[str] = None,
                  interval: float = 0.0005, timeout: float = 600.0,
                  detail: Optional[dict] = None) -> tuple:
    """Run ``argv``; (sum over its process tree of each process's peak RSS, the top
    process's own peak), both KiB.

    The bench becomes a child subreaper, so processes that daemonize (podman's conmon)
    stay in the tree.  A thread walks the tree every ``interval`` seconds through
    ``/proc/PID/task/TID/children`` and keeps, per pid, the largest ``VmHWM`` seen
    (``VmHWM`` is the process's own high-water mark; it restarts at ``exec``, so a
    re-executed process counts with its larger image).  Processes that were already our
    children before the start (long-lived pause processes) are not counted.  A process
    that lives shorter than the interval can be missed; a process's growth after the
    last sample is missed: the figure is a lower bound of the true sum, and shared pages
    (a fork before ``exec``) count once per process, as in any RSS sum.  ``detail``, if
    given, gets pid -> (command name, peak KiB).
    """
    _become_subreaper()
    me = os.getpid()
    before: set = set()
    for child in _children(me):
        before.update(_descendants(child))
    peaks: dict = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in _descendants(me):
                if pid == me or pid in before:
                    continue
                hwm = proc_status_kib(pid, "VmHWM")
                if hwm is not None and hwm > peaks.get(pid, 0):
                    peaks[pid] = hwm
                    if detail is not None:
                        detail[pid] = (_comm(pid), hwm)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, errout = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(argv)}") from None
        # orphans (conmon) may outlive the top process for a moment
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and set(_children(me)) - before - {proc.pid}:
            time.sleep(0.01)
    finally:
        done.set()
        thread.join()
        reap_orphans()
    if proc.returncode != 0:
        raise BenchError(f"exit {proc.returncode}: {shlex.join(argv)}\n"
                         f"{errout.decode(errors='replace')[-2000:]}")
    return sum(peaks.values()), peaks.get(proc.pid, 0)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# -- output -----------------------------------------------------------------------------------

def fmt_seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def fmt_kib(k: int) -> str:
    return f"{k / 1024:.0f} MiB"


def table_rows(cases: Sequence[Case]) -> tuple:
    headers = ["benchmark", "runs", "pbox median (min-max)", "podman median (min-max)",
               "pbox/podman (95% interval)", "target", "met?"]
    rows = []
    for c in cases:
        lo_p, hi_p = c.spread("pbox")
        lo_q, hi_q = c.spread("podman")
        met = c.met()
        rows.append([
            c.name, str(c.runs),
            f"{fmt_seconds(c.median('pbox'))} ({fmt_seconds(lo_p)}-{fmt_seconds(hi_p)})",
            f"{fmt_seconds(c.median('podman'))} ({fmt_seconds(lo_q)}-{fmt_seconds(hi_q)})",
            "{:.2f}x ({:.2f}-{:.2f})".format(c.ratio(), *c.ratio_interval()),
            c.target_text(),
            "-" if met is None else ("yes" if met else "NO"),
        ])
    return headers, rows


def rss_rows(cases: Sequence[Case]) -> tuple:
    headers = ["benchmark", "pbox peak RSS (median)", "podman peak RSS (median)", "pbox/podman"]
    rows = []
    for c in cases:
        if not c.rss:
            continue
        p, q = c.median_rss("pbox"), c.median_rss("podman")
        rows.append([c.name, fmt_kib(p), fmt_kib(q), f"{p / q:.2f}x"])
    return headers, rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def print_table(cases: Sequence[Case], markdown: bool = False) -> None:
    print(format_table(*table_rows(cases), markdown=markdown))
    headers, rows = rss_rows(cases)
    if rows:
        print()
        print(format_table(headers, rows, markdown=markdown))


def results_json(cases: Sequence[Case], extra: Optional[dict] = None) -> str:
    data = {"machine": machine_info(), "cases": []}
    if extra:
        data.update(extra)
    for c in cases:
        data["cases"].append({
            "name": c.name, "target": c.target, "budget": c.budget, "runs": c.runs,
            "pbox": {"argv": c.pbox.argv, "seconds": [s.seconds for s in c.samples["pbox"]],
                     "maxrss_kib": c.rss_samples.get("pbox")
                     or [s.maxrss_kib for s in c.samples["pbox"]]},
            "podman": {"argv": c.podman.argv,
                       "seconds": [s.seconds for s in c.samples["podman"]],
                       "maxrss_kib": c.rss_samples.get("podman")
                       or [s.maxrss_kib for s in c.samples["podman"]]},
            "ratio": c.ratio(),
            "ratio_interval_95": list(c.ratio_interval()),
        })
    return json.dumps(data, indent=2)


# -- the machine ------------------------------------------------------------------------------

def _first_line(argv: Sequence[str], env: Optional[dict] = None) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine_info(pbox: Optional[Sequence[str]] = None, env: Optional[dict] = None) -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info = {
        "cores": str(os.cpu_count()), "cpu": cpu, "memory": mem,
        "kernel": platform.release(), "machine": platform.machine(),
        "bench python": platform.python_version(),
        "podman": _first_line(["podman", "--version"], env),
        "runc": _first_line(["runc", "--version"]),
        "docker-registry": _first_line(["docker-registry", "--version"]),
        "user": _user_name(),
    }
    if pbox:
        info["pbox command"] = shlex.join(pbox)
        info["pbox"] = _first_line(list(pbox) + ["--version"], env)
        py = _pbox_python(pbox)
        if py:
            info["pbox python"] = _first_line([py, "-c", "import sys; print(sys.version)"])
    return info


def fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (from /proc/self/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return f"{kind} ({best or '?'})"


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _pbox_python(pbox: Sequence[str]) -> Optional[str]:
    first = os.path.basename(pbox[0])
    if first.startswith("python"):
        return pbox[0]
    return None


# -- which pbox -------------------------------------------------------------------------------

def _newest_mtime(directory: str) -> float:
    newest = 0.0
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
    return newest


def pbox_command(option: Optional[str]) -> tuple:
    """The pbox command to measure and extra environment for it.

    ``--pbox 'CMD'`` (or ``PBOX_BENCH_CMD``) wins; a ``-m pbox`` in it runs this
    checkout's pbox (PYTHONPATH); a .pyz run as a program starts ``python3`` from PATH
    or ``$PBOX_PYTHON``.  Otherwise ``dist/pbox.pyz`` run as a program (as installed)
    when it is newer than every source file, else ``python -m pbox`` from this
    checkout, both with the interpreter running the benchmark (start the benchmark
    with the interpreter pbox should be timed with, not a version-manager shim).
    """
    text = option or os.environ.get("PBOX_BENCH_CMD")
    if text:
        argv = shlex.split(text)
        # `python -m pbox` means this checkout's pbox, whatever the working directory.
        extra = {"PYTHONPATH": REPO} if "-m" in argv and "pbox" in argv else {}
        return argv, extra
    if os.path.isfile(PBOX_PYZ) and os.stat(PBOX_PYZ).st_mtime >= _newest_mtime(PBOX_SOURCES):
        return [PBOX_PYZ], {"PBOX_PYTHON": sys.executable}
    return [sys.executable, "-m", "pbox"], {"PYTHONPATH": REPO}


def prepare_pbox(argv: Sequence[str], env: dict, scratch_dir: str) -> dict:
    """Byte-compile this checkout's pbox for a ``python -m pbox`` command, untimed.

    An installed pbox has its ``.pyc`` files; a checkout the measuring user cannot write
    to (a root-owned tree) would be compiled again on every run, which is not what a
    user pays.  Then the byte code goes to a scratch tree (``PYTHONPYCACHEPREFIX``).
    """
    if not ("-m" in argv and "pbox" in argv):
        return env
    env = dict(env)
    if not os.access(PBOX_SOURCES, os.W_OK):
        env["PYTHONPYCACHEPREFIX"] = os.path.join(scratch_dir, "pycache")
    proc = subprocess.run([argv[0], "-m", "compileall", "-q", PBOX_SOURCES], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        log(f"compileall failed (runs will compile pbox themselves): {proc.stdout[-500:]}")
    return env


def check_interpreter(argv: Sequence[str]) -> None:
    """Refuse a shim (a shell script in front of python): it would add its own start-up."""
    exe = shutil.which(argv[0]) or argv[0]
    try:
        with open(exe, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise BenchError(f"cannot run the pbox command {argv[0]!r}: {e}") from None
    if head == b"#!" and os.path.basename(exe).startswith("python"):
        raise BenchError(f"{exe} is a script (a version-manager shim?); pass the real "
                         f"interpreter, e.g. --pbox '/usr/bin/python3 -m pbox'")


# -- users ------------------------------------------------------------------------------------

def reexec_as(user: str, argv: Sequence[str]) -> None:
    """Run this benchmark again as ``user`` (from root) and exit with its status."""
    import pwd

    pw = pwd.getpwnam(user)
    # PATH without entries in the caller's home (version-manager shims the user cannot
    # read anyway).
    home = os.path.expanduser("~")
    path = [d for d in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
            if d and not (home != "/" and (d + "/").startswith(home + "/"))]
    env = ["HOME=" + pw.pw_dir, "USER=" + user, "LOGNAME=" + user, "PATH=" + ":".join(path),
           "LANG=" + os.environ.get("LANG", "C.UTF-8")]
    for key in ("PBOX_BENCH_CMD", "PBOX_PYTHON", "TMPDIR"):
        if key in os.environ:
            env.append(f"{key}={os.environ[key]}")
    cmd = ["runuser", "-u", user, "--", "env", "-i", *env, sys.executable,
           *_absolute_pbox(argv)]
    log(f"running as {user}: {shlex.join(cmd[4:])}")
    sys.stdout.flush()
    rc = subprocess.call(cmd, cwd="/")
    raise SystemExit(rc)


def _absolute_pbox(argv: Sequence[str]) -> list:
    """``argv`` with the files named in ``--pbox 'CMD'`` made absolute: the run as the
    other user starts in / (``--pbox 'python3 dist/pbox.pyz'`` from the checkout)."""
    out = list(argv)
    for i, arg in enumerate(out):
        value = None
        if arg == "--pbox" and i + 1 < len(out):
            i, value = i + 1, out[i + 1]
        elif arg.startswith("--pbox="):
            value = arg[len("--pbox="):]
        if value is None:
            continue
        words = [os.path.abspath(w) if not w.startswith("-") and not os.path.isabs(w)
                 and os.sep in w and os.path.exists(w) else w for w in shlex.split(value)]
        out[i] = shlex.join(words) if out[i] == value else "--pbox=" + shlex.join(words)
    return out


# -- scratch space and stores -----------------------------------------------------------------

def userns_rm(path: str) -> None:
    """Remove a store that holds files owned by subordinate ids.

    Such files can only be removed from inside a user namespace mapping those ids:
    ``unshare --map-auto`` (util-linux 2.38+) uses the same newuidmap helpers the
    tools do.
    """
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    if os.getuid() != 0:
        proc = subprocess.run(["unshare", "--map-auto", "--map-root-user", "--",
                               "rm", "-rf", "--", path], capture_output=True)
        if proc.returncode == 0 and not os.path.lexists(path):
            return
        proc = subprocess.run(["podman", "unshare", "rm", "-rf", "--", path],
                              capture_output=True)
    if os.path.lexists(path):
        raise BenchError(f"cannot remove {path}")


class Scratch:
    """A temp directory for one benchmark session; fresh sub-stores on demand."""

    def __init__(self, base: Optional[str] = None, keep: bool = False):
        self.path = tempfile.mkdtemp(prefix="pbox-bench-", dir=base)
        self.keep = keep
        self._count = 0

    def new_dir(self, stem: str) -> str:
        self._count += 1
        path = os.path.join(self.path, f"{stem}-{self._count}")
        os.makedirs(path)
        return path

    def fresh(self, path: str) -> str:
        """Empty ``path`` (removing a previous run's store) and flush dirty pages, so a
        run does not pay for the writes of the one before it."""
        userns_rm(path)
        os.makedirs(path)
        os.sync()
        return path

    def close(self) -> None:
        if self.keep:
            log(f"kept {self.path}")
            return
        userns_rm(self.path)


# -- the registry -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """``docker-registry`` on 127.0.0.1, plain HTTP, filesystem storage in ``workdir``."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Registry:
        binary = require_tool("docker-registry")
        os.makedirs(os.path.join(self.workdir, "storage"), exist_ok=True)
        self.port = free_port()
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.workdir, "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": os.urandom(16).hex()},
        }
        path = os.path.join(self.workdir, "config.yml")
        with open(path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        self._log = open(os.path.join(self.workdir, "registry.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([binary, "serve", path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"docker-registry exited; see {self._log.name}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        self.stop()
        raise BenchError("docker-registry did not answer in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        self.proc = None


# -- podman -----------------------------------------------------------------------------------

CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"

[containers]
log_driver = "k8s-file"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{graphroot}"
runroot = "{runroot}"
"""

POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


class PodmanEnv:
    """Config files and environment for rootless podman in a scratch directory.

    runc and the cgroupfs manager because crun refuses hybrid cgroup v1 hosts; overlay
    storage because the packaged default (vfs) copies every layer.  Each store gets its
    own ``--root``/``--runroot``; the per-user engine tmp dir (and so the pause process
    that holds podman's user namespace) lives under this env's XDG_RUNTIME_DIR.
    """

    def __init__(self, workdir: str, runtime_dir: str):
        self.workdir = workdir
        self.runtime_dir = runtime_dir
        os.makedirs(workdir, exist_ok=True)
        self.containers_conf = os.path.join(workdir, "containers.conf")
        self.storage_conf = os.path.join(workdir, "storage.conf")
        self.policy = os.path.join(workdir, "policy.json")
        with open(self.containers_conf, "w") as f:
            f.write(CONTAINERS_CONF.format(events=os.path.join(workdir, "events.log")))
        with open(self.storage_conf, "w") as f:
            f.write(STORAGE_CONF.format(graphroot=os.path.join(workdir, "default-root"),
                                        runroot=os.path.join(workdir, "default-runroot")))
        with open(self.policy, "w") as f:
            json.dump(POLICY, f)

    def env(self, base: dict) -> dict:
        env = dict(base)
        env.update(CONTAINERS_CONF=self.containers_conf,
                   CONTAINERS_STORAGE_CONF=self.storage_conf,
                   XDG_RUNTIME_DIR=self.runtime_dir)
        return env

    @staticmethod
    def argv(root: str, runroot: str) -> list:
        return ["podman", "--root", root, "--runroot", runroot]

    def stop_pause_process(self) -> None:
        """End the pause process our podman runs started (found by its pid file)."""
        for rel in ("libpod/tmp/pause.pid", "containers/pause.pid"):
            path = os.path.join(self.runtime_dir, rel)
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def stop_pbox_pause(runroot: str) -> None:
    """End the pause process pbox keeps for a run root (``<runroot>/pause.pid``), so a
    benchmark leaves no process behind; only a ``pbox-pause`` of ours is killed."""
    try:
        with open(os.path.join(runroot, "pause.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
        if argv0 == b"pbox-pause" and os.stat(f"/proc/{pid}").st_uid == os.getuid():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def base_env(runtime_dir: str) -> dict:
    """A small, explicit environment shared by both tools."""
    keep = ("HOME", "USER", "LOGNAME", "PATH", "LANG", "TMPDIR", "PBOX_PYTHON")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["XDG_RUNTIME_DIR"] = runtime_dir
    return env


# -- what every benchmark script shares -------------------------------------------------------

BUSYBOX_REPO = "bench/busybox"
DEBIAN_REPO = "bench/debian"
PODMAN_CONFIG = "runtime=runc, cgroup_manager=cgroupfs, storage driver=overlay"


def add_common_args(p, runs: int = 5, keep: bool = True, json_out: bool = True) -> None:
    """The options every benchmark script takes: ``--runs``, ``--pbox``, ``--user``,
    ``--cache``, ``--tmpdir``, ``--keep``, ``--markdown``, ``--json``."""
    p.add_argument("--runs", type=int, default=runs,
                   help=f"repetitions of each case per tool (default {runs})")
    p.add_argument("--pbox", metavar="CMD",
                   help="the pbox command to time, e.g. 'dist/pbox.pyz' (env "
                        "PBOX_BENCH_CMD; default: dist/pbox.pyz when it is up to date, "
                        "else python -m pbox from this checkout)")
    p.add_argument("--user", default=None,
                   help=f"when started as root, run the measurements as this user "
                        f"(default {DEFAULT_USER})")
    p.add_argument("--cache", metavar="DIR", help="image cache (default "
                   "~/.cache/pbox-bench of the measuring user)")
    p.add_argument("--tmpdir", help="where the temp stores go (default: $TMPDIR or /tmp)")
    if keep:
        p.add_argument("--keep", action="store_true",
                       help="keep the temp dir (configs, stores)")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    if json_out:
        p.add_argument("--json", metavar="FILE", help="also write every sample as JSON")


def add_image_kind_arg(p) -> None:
    p.add_argument("--image-kind", choices=("auto", "debootstrap", "synthetic"),
                   default="auto", help="how the Debian-sized image is made (default: "
                   "debootstrap when possible, else a synthetic tree)")


def without_option(argv: Sequence[str], name: str) -> list:
    """``argv`` without ``name VALUE`` and ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def as_measuring_user(args, argv: Sequence[str], script: str,
                      debian: Optional[str] = None) -> None:
    """Started as root: build the image cache (debootstrap needs root), hand it to
    ``args.user`` and run ``script`` again as that user (does not return).  Started as
    anyone else: nothing.  ``debian``: also the Debian-sized image, of this kind
    (``auto``: debootstrap, else the run falls back to a synthetic tree)."""
    if os.getuid() != 0:
        return
    import pwd

    import testimages

    user = args.user or DEFAULT_USER
    pw = pwd.getpwnam(user)
    cache = args.cache or os.path.join(pw.pw_dir, ".cache", "pbox-bench")
    os.makedirs(cache, exist_ok=True)
    if debian:
        try:
            testimages.cached_image(cache, "debian",
                                    "debootstrap" if debian == "auto" else debian)
        except BenchError as e:
            if debian != "auto":
                raise
            log(f"no debootstrap image ({e}); the run will use a synthetic tree")
    testimages.cached_image(cache, "busybox", "busybox")
    for path in (os.path.dirname(cache), cache):
        if os.stat(path).st_uid == 0 and path.startswith(pw.pw_dir + os.sep):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    testimages.chown_tree(cache, pw.pw_uid, pw.pw_gid)
    reexec_as(user, [os.path.abspath(script), *without_option(argv, "--cache"),
                     "--cache", cache])


def script_main(main: Callable) -> None:
    """``sys.exit(main())``, a ``BenchError`` as one line on stderr and exit 1."""
    try:
        sys.exit(main())
    except BenchError as e:
        sys.stderr.write(f"bench: {e}\n")
        sys.exit(1)


class Session:
    """One benchmark run's setting: the pbox command, a scratch dir, podman's config, a
    registry on loopback and both tools' environments.

    ``with Session(args) as s:`` starts the registry; leaving it stops the registry,
    podman's pause process and the pause process of every pbox run root made through
    :class:`Tools`, and removes the scratch dir (unless ``args.keep``).
    """

    def __init__(self, args, need: Sequence[str] = ("podman", "skopeo", "docker-registry")):
        self.pbox, self._pbox_env = pbox_command(args.pbox)
        check_interpreter(self.pbox)
        for tool in need:
            require_tool(tool)
        self.tmpdir = args.tmpdir
        self.keep = bool(getattr(args, "keep", False))
        self.cache = args.cache
        self.runroots: list = []

    def __enter__(self) -> Session:
        import testimages

        self.cache = self.cache or testimages.default_cache_dir()
        self.load = [load_average()]
        log(f"load average at start: {self.load[0]}")
        self.scratch = Scratch(self.tmpdir, keep=self.keep)
        try:
            self.runtime_dir = self.scratch.new_dir("xdg-run")
            os.chmod(self.runtime_dir, 0o700)
            self.podman = PodmanEnv(self.scratch.new_dir("podman-conf"), self.runtime_dir)
            self.registry = Registry(self.scratch.new_dir("registry"))
            base = base_env(self.runtime_dir)
            self.penv = self.podman.env(base)
            self.xenv = prepare_pbox(self.pbox, dict(base, **self._pbox_env),
                                     self.scratch.path)
            self.info = machine_info(self.pbox, self.xenv)
            self.info["podman config"] = PODMAN_CONFIG
            self.info["stores on"] = fs_type(self.scratch.path)
            for k, v in self.info.items():
                log(f"{k}: {v}")
            self.registry.start()
            log(f"registry at {self.registry.host}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.load.append(load_average())
        if getattr(self, "registry", None) is not None:
            self.registry.stop()
        if getattr(self, "podman", None) is not None:
            self.podman.stop_pause_process()
        for runroot in self.runroots:
            stop_pbox_pause(runroot)
        self.scratch.close()

    def image(self, name: str, kind: str = "busybox"):
        """A cached test image (see testimages.cached_image)."""
        import testimages

        return testimages.cached_image(self.cache, name, kind)

    def push_image(self, img, repo: str) -> str:
        """Put a cached image into the registry (skopeo, blobs unchanged); its reference."""
        import testimages

        ref = f"{self.registry.host}/{repo}:{img.tag}"
        testimages.push(img, ref, self.penv, self.podman.policy)
        log(f"pushed {img.describe()}")
        return ref

    def tools(self, pull: Sequence[str] = ()) -> Tools:
        t = Tools(self.pbox, self.xenv, self.penv, self.scratch, pull)
        self.runroots.append(t.prun)
        return t

    def print_info(self, *lines: str) -> None:
        print()
        for k, v in self.info.items():
            print(f"{k}: {v}")
        print(f"load average (1, 5, 15 min): {self.load[0]} at start, {self.load[-1]} at end")
        for line in lines:
            print(line)
        print()


class Tools:
    """Both tools' base commands (``--root``/``--runroot`` of their own fresh stores),
    environments, and the images in ``pull`` pulled into both stores."""

    def __init__(self, pbox, xenv, penv, scratch, pull=()):
        if isinstance(pull, str):
            pull = [pull]
        self.ref = pull[0] if pull else None
        self.proot = scratch.new_dir("pbox-root")
        self.prun = prun = scratch.new_dir("pbox-run")
        self.qroot = scratch.new_dir("podman-root")
        self.qrun = scratch.new_dir("podman-run")
        self.base = {"pbox": list(pbox) + ["--root", self.proot, "--runroot", prun],
                     "podman": PodmanEnv.argv(self.qroot, self.qrun)}
        self.env = {"pbox": xenv, "podman": penv}
        for ref in pull:
            self.pull(ref)

    def pull(self, ref: str) -> None:
        run_once(self.argv("pbox", "pull", "-q", ref), self.env["pbox"])
        run_once(self.argv("podman", "pull", "-q", "--tls-verify=false", ref),
                 self.env["podman"])

    def argv(self, tool: str, *args: str) -> list:
        return self.base[tool] + list(args)

    def cmd(self, tool: str, *args: str, **kw) -> Cmd:
        return Cmd(self.argv(tool, *args), self.env[tool], **kw)

    def run_rm(self, tool: str, *command: str) -> list:
        return self.argv(tool, "run", "--rm", "--network", "none", self.ref, *command)

    def output(self, tool: str, *args: str) -> str:
        proc = subprocess.run(self.argv(tool, *args), env=self.env[tool], text=True,
                              capture_output=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BenchError(f"exit {proc.returncode}: {tool} {' '.join(args)}\n"
                             f"{proc.stderr[-2000:]}")
        return proc.stdout.strip()
