"""Network benchmarks: pasta and slirp4netns, pbox and rootless podman side by side.

    python3 bench/bench_net.py [--mb N] [--connects N] [--runs N] [--pbox 'CMD'] [--markdown]

Cases, for each mode (``pasta``, ``slirp4netns``) and tool (busybox image, nothing but
busybox inside the container):

* container -> host: a server of ours on the host's 127.0.0.1 receives ``--mb`` MB
  that ``head -c ... /dev/zero | nc GW PORT`` sends from the container.  GW is the
  address through which the container reaches the host's loopback: pasta's gateway
  (podman 4.3 maps it too), slirp4netns's 10.0.2.2 with ``allow_host_loopback``.
  Timed on the host from the accepted connection to the last byte.
* host -> container: ``-p 127.0.0.1:PORT:5000`` and ``nc -l -p 5000 > /dev/null`` in
  the container; we send ``--mb`` MB, close our side and wait for the container's
  close.  Timed from connect to that close.
* connect + request: ``--connects`` sequential HTTP/1.0 requests (a new connection
  each) to busybox ``httpd`` behind a published port; the median time per request.

And on a user network (``network create``; pbox: a bridge in a namespace of its own,
one veth per container; podman: netavark's bridge in its rootless network namespace):

* container -> container: a server container (``nc -l -p 5000 > /dev/null``) and a
  client on the same network that sends ``--mb`` MB to it by name; timed inside the
  client from /proc/uptime (10 ms resolution), so container start-up is not counted.

Started as root, it runs itself again as ``--user`` (default pboxtest), like
bench_run.py.  Without a usable podman only pbox's numbers are printed; a mode the
installed podman lacks (Debian 12's podman 4.3 has no pasta) shows "unsupported".
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import common
from common import Session, log

MODES = ("pasta", "slirp4netns")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=200, help="MB per transfer (default 200)")
    p.add_argument("--connects", type=int, default=200,
                   help="requests for the connect case (default 200)")
    common.add_common_args(p, runs=3, json_out=False)
    p.add_argument("--no-podman", action="store_true", help="measure pbox only")
    p.add_argument("--user-network-only", action="store_true",
                   help="only the container -> container case on a user network")
    return p.parse_args(argv)


def network_arg(tool: str, mode: str) -> str:
    if mode == "slirp4netns":
        return "slirp4netns:allow_host_loopback=true"
    return "pasta"


GW_SCRIPT = ("gw=10.0.2.2; [ {slirp} = 1 ] || gw=$(ip route | awk '/default/ {{print $3}}'); "
             "head -c {size} /dev/zero | timeout 120 nc $gw {port}")


def to_host(t, tool: str, mode: str, size: int) -> float:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    result = {}

    def serve():
        srv.settimeout(120)
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            t0 = time.monotonic()
            got = 0
            conn.settimeout(120)
            while got < size:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
            result["seconds"] = time.monotonic() - t0
            result["bytes"] = got

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    script = GW_SCRIPT.format(slirp=int(mode == "slirp4netns"), size=size, port=port)
    subprocess.run(t.argv(tool, "run", "--rm", "--network", network_arg(tool, mode), t.ref,
                          "sh", "-c", script), env=t.env[tool], capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=300)
    srv.close()
    th.join(10)
    if result.get("bytes", 0) < size:
        raise common.BenchError(f"{tool}/{mode}: container->host got "
                                f"{result.get('bytes', 0)} of {size} bytes")
    return result["seconds"]


def _detached(t, tool: str, mode: str, port: int, *command: str) -> str:
    cid = t.output(tool, "run", "-d", "--network", network_arg(tool, mode), "-p",
                   f"127.0.0.1:{port}:5000", t.ref, *command).splitlines()[-1].strip()
    deadline = time.monotonic() + 30
    while ":5000 " not in t.output(tool, "exec", cid, "netstat", "-ltn"):
        if time.monotonic() > deadline:
            raise common.BenchError(f"{tool}/{mode}: nothing listens on 5000")
        time.sleep(0.02)
    return cid


def _remove(t, tool: str, cid: str) -> None:
    subprocess.run(t.argv(tool, "rm", "-f", cid), env=t.env[tool], capture_output=True)


def to_container(t, tool: str, mode: str, size: int) -> float:
    port = common.free_port()
    cid = _detached(t, tool, mode, port, "sh", "-c", "nc -l -p 5000 > /dev/null")
    try:
        block = b"\0" * (1 << 20)
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        with s:
            t0 = time.monotonic()
            left = size
            while left > 0:
                n = min(left, len(block))
                s.sendall(block[:n])
                left -= n
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
            return time.monotonic() - t0
    finally:
        _remove(t, tool, cid)


def connects(t, tool: str, mode: str, n: int) -> float:
    port = common.free_port()
    cid = _detached(t, tool, mode, port, "sh", "-c",
                    "mkdir /www && echo ok > /www/index.html && exec httpd -f -p 5000 -h /www")
    try:
        times = []
        for _ in range(n):
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            if not data.endswith(b"ok\n"):
                raise common.BenchError(f"{tool}/{mode}: bad reply {data[:80]!r}")
            times.append(time.monotonic() - t0)
        return statistics.median(times)
    finally:
        _remove(t, tool, cid)


USER_NET = "pbench-net"
C2C_SCRIPT = ("read a x < /proc/uptime; head -c {size} /dev/zero | timeout 120 nc {server} 5000; "
              "read b x < /proc/uptime; echo \"$a $b\"")


def between_containers(t, tool: str, size: int) -> float:
    subprocess.run(t.argv(tool, "network", "create", USER_NET), env=t.env[tool],
                   capture_output=True)
    server = f"pbench-srv-{tool}"
    try:
        # busybox nc half-closes when its stdin ends, and a client that sees that
        # quits before it has sent everything: the server's stdin stays open.
        t.output(tool, "run", "-d", "--name", server, "--network", USER_NET, t.ref, "sh", "-c",
                 "sleep 1000 | nc -l -p 5000 > /dev/null")
        deadline = time.monotonic() + 30
        while ":5000 " not in t.output(tool, "exec", server, "netstat", "-ltn"):
            if time.monotonic() > deadline:
                raise common.BenchError(f"{tool}: nothing listens on 5000")
            time.sleep(0.02)
        # by address: podman resolves names only with aardvark-dns installed
        info = json.loads(t.output(tool, "inspect", server))[0]
        ip = info["NetworkSettings"]["Networks"][USER_NET]["IPAddress"]
        out = t.output(tool, "run", "--rm", "--network", USER_NET, t.ref, "sh", "-c",
                       C2C_SCRIPT.format(size=size, server=ip))
        a, b = (float(x) for x in out.strip().splitlines()[-1].split())
        if b <= a:
            raise common.BenchError(f"{tool}: container -> container took no time: {out!r}")
        return b - a
    finally:
        _remove(t, tool, server)
        subprocess.run(t.argv(tool, "network", "rm", USER_NET), env=t.env[tool],
                       capture_output=True)


def measure(t, tools, args) -> dict:
    size = args.mb * 1000 * 1000
    out: dict = {}
    for mode in () if args.user_network_only else MODES:
        for case, fn, arg in (("container -> host", to_host, size),
                              ("host -> container", to_container, size),
                              ("connect + request", connects, args.connects)):
            for rep in range(args.runs):
                for tool in (tools if rep % 2 == 0 else tools[::-1]):
                    key = (mode, case, tool)
                    try:
                        out.setdefault(key, []).append(fn(t, tool, mode, arg))
                    except (common.BenchError, OSError, subprocess.SubprocessError) as e:
                        log(f"{tool}/{mode}/{case}: failed: {e}")
                        out.setdefault(key, [])
                        if "network not found" in str(e) or "got 0 of" in str(e):
                            out[("unsupported",) + key] = True
            log(f"{mode}: {case} done")
    for rep in range(args.runs):
        for tool in (tools if rep % 2 == 0 else tools[::-1]):
            key = ("user network", "container -> container", tool)
            try:
                out.setdefault(key, []).append(between_containers(t, tool, size))
            except (common.BenchError, OSError, subprocess.SubprocessError) as e:
                log(f"{tool}/user network: failed: {e}")
                out.setdefault(key, [])
    log("user network: container -> container done")
    return out


def table(results: dict, tools, args) -> tuple:
    headers = ["mode", "case"] + [f"{tool} (median)" for tool in tools]
    if "podman" in tools:
        headers.append("pbox/podman")
    rows = []
    cases = [(m, c) for m in MODES for c in ("container -> host", "host -> container",
                                             "connect + request")
             if not args.user_network_only]
    for mode, case in cases + [("user network", "container -> container")]:
        meds = {}
        cells = [mode, case]
        for tool in tools:
            xs = results.get((mode, case, tool)) or []
            if not xs:
                cells.append("unsupported" if results.get(("unsupported", mode, case,
                                                           tool)) else "failed")
                continue
            m = meds[tool] = statistics.median(xs)
            if case == "connect + request":
                cells.append(f"{m * 1000:.2f} ms")
            else:
                cells.append(f"{args.mb * 8 / m:.0f} Mbit/s ({m:.2f} s)")
        if "podman" in tools:
            if len(meds) == 2:
                cells.append(f"{meds['pbox'] / meds['podman']:.2f}x time")
            else:
                cells.append("-")
        rows.append(cells)
    return headers, rows


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    common.as_measuring_user(args, argv, __file__)
    tools = ["pbox"]
    if not args.no_podman and common.shutil.which("podman"):
        tools.append("podman")
    with Session(args, need=("docker-registry", "skopeo")) as s:
        t = s.tools(pull=[s.push_image(s.image("busybox"), common.BUSYBOX_REPO)])
        for prog in ("pasta", "slirp4netns"):
            s.info[prog] = common._first_line([prog, "--version"]) or "?"
        results = measure(t, tools, args)
    s.print_info(f"transfer size: {args.mb} MB; requests: {args.connects}; "
                 f"runs: {args.runs}")
    print(common.format_table(*table(results, tools, args), markdown=args.markdown))
    return 0


if __name__ == "__main__":
    common.script_main(main)
