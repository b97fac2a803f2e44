"""--network container:NAME, --dns-search/--dns-option, --add-host NAME:host-gateway."""

from __future__ import annotations

import json
import socket
import threading

import pytest


@pytest.fixture
def bb(registry_plain, test_images, run_pbox):
    ref = test_images(registry_plain).busybox.reference
    run_pbox("pull", "-q", ref)
    return ref


def test_container_network_shares_the_owners_namespace(bb, run_pbox):
    run_pbox("run", "-d", "--name", "owner", "--hostname", "ownerhost", bb, "sh", "-c",
             "echo from-owner > /tmp/f; while true; do nc -l -p 7777 < /tmp/f; done")
    try:
        mine = run_pbox("exec", "owner", "ls", "/sys/class/net").stdout.split()
        hosts = run_pbox("exec", "owner", "cat", "/etc/hosts").stdout
        out = run_pbox("run", "--rm", "--network", "container:owner", bb, "sh", "-c",
                       "hostname; ls /sys/class/net; cat /etc/hosts; "
                       "for i in $(seq 100); do nc 127.0.0.1 7777 </dev/null && break; "
                       "usleep 50000; done").stdout
        lines = out.splitlines()
        assert lines[0] == "ownerhost"
        assert sorted(out.split("\n", 1)[1].split("127.0.0.1")[0].split()) == sorted(mine)
        assert hosts in out
        assert lines[-1] == "from-owner"
        info = json.loads(run_pbox("inspect", "owner").stdout)[0]
        oid = info["Id"]
        run_pbox("create", "--name", "joiner", "--network", f"container:{oid[:12]}", bb,
                 "true")
        ji = json.loads(run_pbox("inspect", "joiner").stdout)[0]
        assert ji["HostConfig"]["NetworkMode"] == f"container:{oid}"
        assert ji["Config"]["Hostname"] == "ownerhost"
        run_pbox("run", "-d", "--name", "joined", "--network", "container:owner", bb,
                 "sleep", "600")
        run_pbox("stop", "-t", "0", "owner")
        # the joined container keeps the (now unconnected) namespace, as with docker
        st = json.loads(run_pbox("inspect", "joined").stdout)[0]["State"]
        assert st["Running"] is True
        assert "lo" in run_pbox("exec", "joined", "ls", "/sys/class/net").stdout.split()
        run_pbox("stop", "-t", "0", "joined")
        r = run_pbox("start", "joiner", check=False)  # docker's start fails with 1
        assert r.returncode != 0
        assert r.stderr.startswith("Error: ") and "non running container" in r.stderr
        r = run_pbox("run", "--rm", "--network", "container:owner", bb, "true",
                     expect_rc=125)
        assert "non running container" in r.stderr
    finally:
        run_pbox("rm", "-f", "owner", "joiner", "joined", check=False)


def test_container_network_conflicts(bb, run_pbox):
    r = run_pbox("run", "--rm", "--network", "container:nosuch", "-p", "8080:80", bb, "true",
                 expect_rc=125)
    assert r.stderr == ("Error: conflicting options: port publishing and the container "
                        "type network mode\n")
    for opt in (["--hostname", "x"], ["--dns", "1.1.1.1"], ["--add-host", "a:1.2.3.4"]):
        r = run_pbox("run", "--rm", "--network", "container:nosuch", *opt, bb, "true",
                     expect_rc=125)
        assert r.stderr.startswith("Error: conflicting options: ")
    r = run_pbox("run", "--rm", "--network", "container:nosuch", bb, "true", expect_rc=125)
    assert "No such container: nosuch" in r.stderr


def test_dns_search_and_options(bb, run_pbox):
    out = run_pbox("run", "--name", "dnsopt", "--dns-search", "example.test",
                   "--dns-search", "corp.test", "--dns-option", "ndots:2",
                   "--dns-option", "timeout:1", bb, "cat", "/etc/resolv.conf").stdout
    try:
        assert "search example.test corp.test\n" in out
        assert "options ndots:2 timeout:1\n" in out
        assert "nameserver " in out
        host = json.loads(run_pbox("inspect", "dnsopt").stdout)[0]["HostConfig"]
        assert host["DnsSearch"] == ["example.test", "corp.test"]
        assert host["DnsOptions"] == ["ndots:2", "timeout:1"]
    finally:
        run_pbox("rm", "-f", "dnsopt")


def _gateway() -> str:
    with open("/proc/net/route") as f:
        for ln in f.read().splitlines()[1:]:
            r = ln.split()
            if r[1] == "00000000":
                return socket.inet_ntoa(int(r[2], 16).to_bytes(4, "little"))
    return ""


def test_add_host_host_gateway(bb, run_pbox):
    out = run_pbox("run", "--rm", "--add-host", "gw:host-gateway", "--add-host",
                   "other:10.1.2.3", bb, "cat", "/etc/hosts").stdout
    assert f"{_gateway()}\tgw\n" in out and "10.1.2.3\tother\n" in out
    out = run_pbox("run", "--rm", "--network", "slirp4netns:allow_host_loopback=true",
                   "--add-host", "gw:host-gateway", bb, "cat", "/etc/hosts").stdout
    assert "10.0.2.2\tgw\n" in out
    out = run_pbox("run", "--rm", "--network", "host", "--add-host", "gw=host-gateway", bb,
                   "cat", "/etc/hosts").stdout
    assert "127.0.0.1\tgw\n" in out


def test_host_gateway_reaches_a_host_server(bb, run_pbox):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        srv.settimeout(60)
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"hello-gw\n")
            conn.settimeout(30)
            try:
                conn.recv(1)  # the client closes first (see test_network.py)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = run_pbox("run", "--rm", "--add-host", "hostgw:host-gateway", bb, "sh", "-c",
                       f"nc hostgw {port} -e sh -c 'read line; echo \"$line\" >&2'")
        assert out.stderr == "hello-gw\n"
    finally:
        srv.close()
        t.join(5)
