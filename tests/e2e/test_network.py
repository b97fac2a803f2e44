"""The default rootless network (pasta), slirp4netns, none/host, and published ports."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import pytest
from harness.registry import fetch_retrying, free_port, port_refused


@pytest.fixture
def bb(registry_plain, test_images, run_pbox):
    ref = test_images(registry_plain).busybox.reference
    run_pbox("pull", "-q", ref)
    return ref


def _helpers_of(root_marker: str) -> list[int]:
    """pasta/slirp4netns processes of this user still running."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            st = os.stat(f"/proc/{pid}")
        except OSError:
            continue
        if comm in ("pasta", "passt", "pasta.avx2", "passt.avx2", "slirp4netns") and \
                st.st_uid == os.getuid():
            out.append(int(pid))
    return out


HTTPD = "mkdir -p /www && echo served-by-$NET > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.mark.parametrize("net", ["pasta", "slirp4netns", ""])
def test_published_port_serves_then_closes(bb, run_pbox, net):
    before = set(_helpers_of(""))
    port = free_port()
    args = ["run", "-d", "--name", "web", "-e", f"NET={net or 'default'}",
            "-p", f"127.0.0.1:{port}:80"]
    if net:
        args += ["--network", net]
    run_pbox(*args, bb, "sh", "-c", HTTPD)
    body = fetch_retrying(f"http://127.0.0.1:{port}/index.html")
    assert body == f"served-by-{net or 'default'}\n".encode()
    assert run_pbox("port", "web").stdout == f"80/tcp -> 127.0.0.1:{port}\n"
    assert run_pbox("port", "web", "80").stdout == f"127.0.0.1:{port}\n"
    run_pbox("port", "web", "81/tcp", expect_rc=1)
    ps = run_pbox("ps", "--format", "{{.Names}} {{.Ports}}").stdout
    assert f"web 127.0.0.1:{port}->80/tcp" in ps
    info = json.loads(run_pbox("inspect", "web").stdout)[0]
    ns = info["NetworkSettings"]
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert ns["IPAddress"]
    hosts = run_pbox("exec", "web", "cat", "/etc/hosts").stdout if _has_exec(run_pbox) \
        else None
    if hosts is not None:
        assert ns["IPAddress"] in hosts
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                              "HostPort": str(port)}]}
    run_pbox("stop", "-t", "1", "web")
    assert port_refused(port)
    assert run_pbox("port", "web").stdout == ""
    # restart: the port is published again
    run_pbox("start", "web")
    assert fetch_retrying(f"http://127.0.0.1:{port}/index.html").startswith(b"served-by-")
    run_pbox("rm", "-f", "web")
    assert port_refused(port)
    assert _no_new_helpers(before), _describe(set(_helpers_of("")) - before)


def _has_exec(run_pbox) -> bool:
    return run_pbox("exec", "--help", check=False).returncode == 0


def test_default_network_has_interface_and_resolver(bb, run_pbox):
    out = run_pbox("run", "--rm", bb, "sh", "-c",
                   "ls /sys/class/net; cat /etc/resolv.conf; ip route").stdout
    ifaces = out.split("nameserver")[0].split()
    assert "lo" in ifaces and len(ifaces) >= 2
    assert "nameserver " in out and "default via" in out
    out = run_pbox("run", "--rm", "--network", "slirp4netns", bb, "sh", "-c",
                   "cat /etc/resolv.conf; ip route").stdout
    assert "nameserver 10.0.2.3" in out and "default via 10.0.2.2" in out


def test_helpers_end_after_run_rm_without_ports(bb, run_pbox):
    # Without published ports pbox signals its pasta and does not wait for it to go (the
    # kernel's teardown of its tap device takes tens of ms): it must still go.
    before = set(_helpers_of(""))
    for net in ("pasta", "slirp4netns"):
        run_pbox("run", "--rm", "--network", net, bb, "true")
    assert _no_new_helpers(before), _describe(set(_helpers_of("")) - before)


def _no_new_helpers(before: set) -> bool:
    deadline = time.monotonic() + 10
    while set(_helpers_of("")) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return not set(_helpers_of("")) - before


def _describe(pids) -> list[str]:
    """Command line and start of each process: pasta's names its starter in --pid."""
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{p}/stat") as f:
                start = f.read().rsplit(")", 1)[1].split()[19]
            out.append(f"{p} (start {start}): {cmd}")
        except OSError:
            out.append(f"{p}: gone")
    return out


def test_default_network_set_up_while_the_container_is_created(bb, run_pbox):
    """`run` starts pasta on a namespace of its own before the container exists (the
    short path): the container gets that namespace, and every path ends the pasta."""
    before = set(_helpers_of(""))
    out = run_pbox("run", "--rm", bb, "sh", "-c", "ip -4 addr show; ip route").stdout
    assert "default via" in out and out.count("inet ") == 2  # lo and pasta's interface
    cid = run_pbox("run", "-d", bb, "sleep", "100").stdout.strip()
    address = json.loads(run_pbox("inspect", cid).stdout)[0]["NetworkSettings"]["IPAddress"]
    assert address
    assert f"inet {address}/" in run_pbox("exec", cid, "ip", "-4", "addr", "show").stdout
    run_pbox("rm", "-f", cid)
    # failures after pasta started: the image is missing, the name is taken
    run_pbox("run", "--rm", "--pull", "never", "nosuchimage:1", "true", expect_rc=125)
    run_pbox("create", "--name", "taken", bb, "true")
    r = run_pbox("run", "--rm", "--name", "taken", bb, "true", expect_rc=125)
    assert "taken" in r.stderr
    run_pbox("rm", "taken")
    assert _no_new_helpers(before), _describe(set(_helpers_of("")) - before)


def test_network_none_and_host(bb, run_pbox):
    out = run_pbox("run", "--rm", "--network", "none", bb, "ls", "/sys/class/net").stdout
    assert out.split() == ["lo"]
    host = sorted(os.listdir("/sys/class/net"))
    out = run_pbox("run", "--rm", "--network", "host", bb, "ls", "/sys/class/net").stdout
    assert sorted(out.split()) == host
    r = run_pbox("run", "--rm", "--network", "none", "-p", "8080:80", bb, "true", expect_rc=125)
    assert r.stderr.startswith("Error: ")


def test_port_conflict(bb, run_pbox):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = run_pbox("run", "--rm", "-p", f"127.0.0.1:{port}:80", bb, "true", expect_rc=125)
        assert r.stderr.startswith("Error: ")
        assert f"port {port} is already in use" in r.stderr
        r = run_pbox("run", "-d", "--name", "busy", "-p", f"127.0.0.1:{port}:80", bb,
                     "sleep", "30", expect_rc=125)
        assert f"port {port} is already in use" in r.stderr
        run_pbox("rm", "-f", "busy")
    finally:
        s.close()


def test_publish_all_exposed(bb, run_pbox):
    run_pbox("run", "-d", "--name", "pall", "--expose", "80", "-P", bb, "sh", "-c",
             HTTPD.replace("$NET", "all"))
    try:
        line = run_pbox("port", "pall").stdout.strip()
        assert line.startswith("80/tcp -> 0.0.0.0:")
        port = int(line.rsplit(":", 1)[1])
        assert fetch_retrying(f"http://127.0.0.1:{port}/") == b"served-by-all\n"
    finally:
        run_pbox("rm", "-f", "pall")


def test_outbound_to_a_host_server(bb, run_pbox):
    """The container reaches a server on the host's loopback through pasta's gateway
    address (pasta maps it to the host); nothing leaves the machine."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = []

    def serve():
        srv.settimeout(60)
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"hello-from-host\n")
            got.append(True)
            # The client closes first: the passt in Debian 12 sometimes repeats data, or
            # loses the FIN, on a spliced connection that the host side closes.
            conn.settimeout(30)
            with contextlib.suppress(OSError):
                conn.recv(1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = run_pbox("run", "--rm", bb, "sh", "-c",
                       f"gw=$(ip route | awk '/default/ {{print $3}}'); "
                       f"nc $gw {port} -e sh -c 'read line; echo \"$line\" >&2'")
        assert out.stderr == "hello-from-host\n"
    finally:
        srv.close()
        t.join(5)
