"""User networks: create/ls/inspect/rm/prune/connect/disconnect, names in /etc/hosts,
isolation, --internal, published ports from a container on a user network."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from harness.registry import fetch_retrying, free_port, port_refused


@pytest.fixture
def bb(registry_plain, test_images, run_pbox):
    ref = test_images(registry_plain).busybox.reference
    run_pbox("pull", "-q", ref)
    return ref


# A one-request-at-a-time server answering its own name; the client closes first.
SERVER = "while true; do echo reply-from-$(hostname) | nc -l -p 7000; done"


def _holders() -> list[int]:
    """pbox-net holder processes of this user (of any test running now)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
            st = os.stat(f"/proc/{pid}")
        except OSError:
            continue
        if argv0 == b"pbox-net" and st.st_uid == os.getuid():
            out.append(int(pid))
    return out


def _recorded_holders(pbox_root) -> set[int]:
    """The holders this test's run root records (its networks' state files)."""
    d = os.path.join(pbox_root.runroot, "networks")
    out = set()
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                pid = json.load(f).get("holder") or 0
            if pid:
                out.add(pid)
    return out


def _ask(run_pbox, net, bb, target, tries=50):
    """Run a client on ``net`` that asks ``target``'s server (port 7000) for its name
    (retrying while the server starts)."""
    return run_pbox("run", "--rm", "--network", net, bb, "sh", "-c",
                    f"for i in $(seq {tries}); do nc {target} 7000 </dev/null && exit 0; "
                    f"sleep 0.1; done; exit 3", check=False)


def test_create_ls_inspect_rm(run_pbox):
    nid = run_pbox("network", "create", "--label", "team=a", "--subnet", "10.89.77.0/24",
                   "nw-a").stdout.strip()
    assert len(nid) == 64
    try:
        ls = run_pbox("network", "ls").stdout.splitlines()
        assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        names = [ln.split()[1] for ln in ls[1:]]
        assert names == sorted(names) and {"bridge", "host", "none", "nw-a"} <= set(names)
        assert nid[:12] in run_pbox("network", "ls", "-q").stdout.split()
        out = run_pbox("network", "ls", "--format", "{{.Name}} {{.Driver}}",
                       "--filter", "label=team=a").stdout
        assert out == "nw-a bridge\n"
        info = json.loads(run_pbox("network", "inspect", "nw-a").stdout)[0]
        assert info["Id"] == nid and info["Driver"] == "bridge"
        assert info["IPAM"]["Config"] == [{"Subnet": "10.89.77.0/24", "Gateway": "10.89.77.1"}]
        assert info["Labels"] == {"team": "a"} and info["Internal"] is False
        r = run_pbox("network", "create", "nw-a", expect_rc=125)
        assert r.stderr == "Error: network with name nw-a already exists\n"
        r = run_pbox("network", "create", "--subnet", "10.89.77.128/25", "nw-b", expect_rc=125)
        assert r.stderr.startswith("Error: Pool overlaps")
        r = run_pbox("network", "inspect", "nope", expect_rc=1)
        assert r.stderr == "Error: network nope not found\n"
    finally:
        assert run_pbox("network", "rm", "nw-a").stdout == "nw-a\n"
    r = run_pbox("network", "rm", "nw-a", expect_rc=1)
    assert r.stderr == "Error: network nw-a not found\n"
    run_pbox("network", "rm", "-f", "nw-a")
    r = run_pbox("network", "rm", "bridge", expect_rc=1)
    assert "pre-defined network" in r.stderr


def test_unknown_network(bb, run_pbox):
    r = run_pbox("run", "--rm", "--network", "no-such-net", bb, "true", expect_rc=125)
    assert r.stderr == "Error: network no-such-net not found\n"
    assert run_pbox("ps", "-aq").stdout == ""
    r = run_pbox("run", "--rm", "--network-alias", "x", bb, "true", expect_rc=125)
    assert "user defined networks" in r.stderr


def test_tutorial_by_name_alias_hostname(bb, run_pbox):
    """The web + redis scenario: a server container and clients reaching it by name,
    by --network-alias and by --hostname; the server's own hosts file names them too."""
    run_pbox("network", "create", "app")
    try:
        run_pbox("run", "-d", "--name", "redis", "--network", "app", "--network-alias", "db",
                 "--hostname", "redis-host", bb, "sh", "-c", SERVER)
        for target in ("redis", "db", "redis-host"):
            r = _ask(run_pbox, "app", bb, target)
            assert r.returncode == 0, r.stderr
            assert r.stdout == "reply-from-redis-host\n"
        out = run_pbox("run", "--rm", "--network", "app", "--name", "web", bb,
                       "cat", "/etc/hosts").stdout
        ip = json.loads(run_pbox("inspect", "redis").stdout)[0][
            "NetworkSettings"]["Networks"]["app"]["IPAddress"]
        assert ip.startswith("10.")
        assert any(ln.split()[0] == ip and {"redis", "db", "redis-host"} <= set(ln.split())
                   for ln in out.splitlines())
        info = json.loads(run_pbox("network", "inspect", "app").stdout)[0]
        assert [c["Name"] for c in info["Containers"].values()] == ["redis"]
        # in use: rm refuses and names the container
        r = run_pbox("network", "rm", "app", expect_rc=1)
        assert r.stderr.startswith("Error: ") and "(redis)" in r.stderr
        # a client that does not exist is not resolvable
        r = run_pbox("run", "--rm", "--network", "app", bb, "ping", "-c1", "-W1", "nosuch",
                     check=False)
        assert r.returncode != 0 and "bad address" in r.stderr
    finally:
        run_pbox("rm", "-f", "redis", check=False)
        run_pbox("network", "rm", "app")


def test_names_follow_start_stop_rm(bb, run_pbox, pbox_root):
    run_pbox("network", "create", "follow")
    try:
        run_pbox("run", "-d", "--name", "early", "--network", "follow", bb, "sleep", "300")
        (holder,) = _recorded_holders(pbox_root)
        assert holder in _holders()

        def hosts():
            return run_pbox("exec", "early", "cat", "/etc/hosts").stdout

        assert "late" not in hosts()
        run_pbox("run", "-d", "--name", "late", "--network", "follow", bb, "sh", "-c", SERVER)
        assert " late " in hosts().replace("\t", " ")
        r = run_pbox("exec", "early", "sh", "-c",
                     "for i in $(seq 50); do nc late 7000 </dev/null && exit 0; sleep 0.1; "
                     "done; exit 3", check=False)
        assert r.returncode == 0 and r.stdout.startswith("reply-from-")
        run_pbox("stop", "-t", "1", "late")
        assert "late" not in hosts()
        run_pbox("start", "late")
        assert " late " in hosts().replace("\t", " ")
        run_pbox("rm", "-f", "late")
        assert "late" not in hosts()
        r = run_pbox("exec", "early", "ping", "-c1", "-W1", "late", check=False)
        assert r.returncode != 0
    finally:
        run_pbox("rm", "-f", "early", "late", check=False)
        run_pbox("network", "rm", "follow")
    assert holder not in _holders() and _recorded_holders(pbox_root) == set()


def test_isolation_between_networks(bb, run_pbox):
    # The other network is internal, so that a packet for the first one's address has
    # no route at all (through pasta it would be sent towards the host's gateway).
    run_pbox("network", "create", "iso-a")
    run_pbox("network", "create", "--internal", "iso-b")
    try:
        run_pbox("run", "-d", "--name", "srv-a", "--network", "iso-a", bb, "sh", "-c", SERVER)
        ip = json.loads(run_pbox("inspect", "srv-a").stdout)[0][
            "NetworkSettings"]["Networks"]["iso-a"]["IPAddress"]
        assert _ask(run_pbox, "iso-a", bb, ip).stdout == f"reply-from-{_short(run_pbox)}\n"
        r = run_pbox("run", "--rm", "--network", "iso-b", bb, "sh", "-c",
                     f"ping -c1 -W1 srv-a; echo rc=$?; nc -w 2 {ip} 7000 </dev/null; "
                     f"echo rc=$?; ping -c1 -W1 {ip}; echo rc=$?", check=False)
        assert "reply-from" not in r.stdout
        assert "rc=0" not in r.stdout, r.stdout
        # the same client on the first network gets through
        r = run_pbox("run", "--rm", "--network", "iso-a", bb, "sh", "-c",
                     f"ping -c1 -W1 srv-a >/dev/null; echo rc=$?; ping -c1 -W1 {ip} "
                     f">/dev/null; echo rc=$?", check=False)
        assert r.stdout == "rc=0\nrc=0\n"
    finally:
        run_pbox("rm", "-f", "srv-a", check=False)
        run_pbox("network", "rm", "iso-a", "iso-b")


def _short(run_pbox) -> str:
    return run_pbox("inspect", "-f", "{{.Config.Hostname}}", "srv-a").stdout.strip()


def test_internal_network_has_no_outbound(bb, run_pbox):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    run_pbox("network", "create", "--internal", "inner")
    run_pbox("network", "create", "outer")
    try:
        probe = (f"gw=$(ip route | awk '/default/ {{print $3}}'); echo gw=$gw; "
                 f"[ -n \"$gw\" ] && nc -w 3 $gw {port} </dev/null; echo rc=$?")
        out = run_pbox("run", "--rm", "--network", "inner", bb, "sh", "-c", probe).stdout
        assert "gw=\n" in out  # no default route at all
        assert json.loads(run_pbox("network", "inspect", "inner").stdout)[0]["Internal"]
        # the same probe from a normal user network reaches the host's server
        out = run_pbox("run", "--rm", "--network", "outer", bb, "sh", "-c", probe).stdout
        assert "gw=\n" not in out and "rc=0" in out
    finally:
        srv.close()
        run_pbox("network", "rm", "inner", "outer")


def test_published_port_from_user_network(bb, run_pbox):
    port = free_port()
    run_pbox("network", "create", "pub")
    try:
        run_pbox("run", "-d", "--name", "web", "--network", "pub", "-p",
                 f"127.0.0.1:{port}:80", bb, "sh", "-c",
                 "mkdir /www && echo on-a-user-network > /www/index.html && "
                 "exec httpd -f -p 80 -h /www")
        assert fetch_retrying(f"http://127.0.0.1:{port}/") == b"on-a-user-network\n"
        assert f"127.0.0.1:{port}->80/tcp" in run_pbox("ps", "--format", "{{.Ports}}").stdout
        run_pbox("stop", "-t", "1", "web")
        assert port_refused(port)
    finally:
        run_pbox("rm", "-f", "web", check=False)
        run_pbox("network", "rm", "pub")


def test_connect_disconnect_and_prune(bb, run_pbox):
    run_pbox("network", "create", "first")
    run_pbox("network", "create", "second")
    try:
        run_pbox("run", "-d", "--name", "multi", "--network", "first", bb, "sh", "-c", SERVER)
        assert _ask(run_pbox, "second", bb, "multi", tries=1).returncode != 0
        run_pbox("network", "connect", "--alias", "extra", "second", "multi")
        r = _ask(run_pbox, "second", bb, "extra")
        assert r.returncode == 0 and r.stdout.startswith("reply-from-")
        nets = json.loads(run_pbox("inspect", "multi").stdout)[0]["NetworkSettings"]["Networks"]
        assert set(nets) == {"first", "second"}
        r = run_pbox("network", "connect", "second", "multi", expect_rc=125)
        assert "already exists in network second" in r.stderr
        run_pbox("network", "disconnect", "second", "multi")
        assert _ask(run_pbox, "second", bb, "multi", tries=1).returncode != 0
        assert _ask(run_pbox, "first", bb, "multi").returncode == 0
        r = run_pbox("network", "prune", "-f")
        assert r.stdout == "Deleted Networks:\nsecond\n"
    finally:
        run_pbox("rm", "-f", "multi", check=False)
        run_pbox("network", "rm", "-f", "first", "second")


def test_killed_holder_is_recreated(bb, run_pbox, pbox_root):
    run_pbox("network", "create", "fragile")
    try:
        run_pbox("run", "-d", "--name", "keep", "--network", "fragile", bb, "sh", "-c", SERVER)
        (holder,) = _recorded_holders(pbox_root)
        assert holder in _holders()
        os.kill(holder, 9)
        deadline = time.monotonic() + 10
        while holder in _holders() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = run_pbox("network", "inspect", "fragile")
        assert "holder process" in r.stderr and "was killed" in r.stderr
        # the next container on the network brings the bridge back, with "keep" on it
        r = _ask(run_pbox, "fragile", bb, "keep")
        assert r.returncode == 0 and r.stdout.startswith("reply-from-")
        assert run_pbox("network", "inspect", "fragile").stderr == ""
        (second,) = _recorded_holders(pbox_root)
        assert second != holder and second in _holders()
    finally:
        run_pbox("rm", "-f", "keep", check=False)
        run_pbox("network", "rm", "fragile")
    assert second not in _holders() and _recorded_holders(pbox_root) == set()


def _pastas() -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
                if comm.startswith(("pasta", "passt")) and os.stat(f"/proc/{pid}").st_uid == \
                        os.getuid():
                    out.add(int(pid))
            except OSError:
                continue
    return out


def test_killed_pasta_is_reported(bb, run_pbox, pbox_root):
    run_pbox("network", "create", "lonely")
    try:
        cid = run_pbox("run", "-d", "--name", "victim", "--network", "lonely", bb, "sleep",
                       "300").stdout.strip()
        # its pasta, as the container's state records it (other tests may run pastas too)
        with open(os.path.join(pbox_root.root, "containers", cid, "state.json")) as f:
            pasta = json.load(f)["NetworkSettings"]["HelperPid"]
        assert pasta in _pastas()
        assert run_pbox("inspect", "victim").stderr == ""
        os.kill(pasta, 9)
        deadline = time.monotonic() + 10
        while pasta in _pastas() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = run_pbox("inspect", "victim")
        assert f"pid {pasta}) is gone" in r.stderr
        run_pbox("restart", "-t", "1", "victim")
        assert run_pbox("inspect", "victim").stderr == ""
    finally:
        run_pbox("rm", "-f", "victim", check=False)
        run_pbox("network", "rm", "lonely")


def test_twenty_containers_reach_each_other(bb, run_pbox, pbox_root):
    run_pbox("network", "create", "crowd")
    names = [f"c{i}" for i in range(1, 21)]
    try:
        for n in names:
            run_pbox("run", "-d", "--name", n, "--network", "crowd", bb, "sleep", "600")
        probe = "; ".join(f"ping -c1 -W2 {n} >/dev/null || echo unreachable-{n}"
                          for n in names)
        for n in names:
            r = run_pbox("exec", n, "sh", "-c", probe)
            assert r.stdout == "", (n, r.stdout)
        info = json.loads(run_pbox("network", "inspect", "crowd").stdout)[0]
        ips = sorted(c["IPv4Address"] for c in info["Containers"].values())
        assert len(set(ips)) == 20
    finally:
        run_pbox("rm", "-f", *names, check=False)
        run_pbox("network", "rm", "crowd")
    assert _recorded_holders(pbox_root) == set()


def test_connect_a_default_network_container_keeps_it_across_restart(bb, run_pbox):
    run_pbox("network", "create", "late-join")
    try:
        run_pbox("run", "-d", "--name", "plain", bb, "sh", "-c", SERVER)
        run_pbox("network", "connect", "late-join", "plain")
        r = _ask(run_pbox, "late-join", bb, "plain")
        assert r.returncode == 0 and r.stdout.startswith("reply-from-")
        run_pbox("restart", "-t", "1", "plain")
        r = _ask(run_pbox, "late-join", bb, "plain")
        assert r.returncode == 0 and r.stdout.startswith("reply-from-")
        # its own outbound interface is still pasta's, the veth comes next to it
        out = run_pbox("exec", "plain", "ip", "route").stdout
        assert "default via" in out and "10.89." in out
    finally:
        run_pbox("rm", "-f", "plain", check=False)
        run_pbox("network", "rm", "late-join")


def test_fixed_address(bb, run_pbox):
    run_pbox("network", "create", "--subnet", "10.89.123.0/24", "fixed")
    try:
        run_pbox("run", "-d", "--name", "pinned", "--network", "fixed", "--ip", "10.89.123.50",
                 bb, "sh", "-c", SERVER)
        nets = json.loads(run_pbox("inspect", "pinned").stdout)[0]["NetworkSettings"]["Networks"]
        assert nets["fixed"]["IPAddress"] == "10.89.123.50"
        assert nets["fixed"]["IPAMConfig"] == {"IPv4Address": "10.89.123.50"}
        r = _ask(run_pbox, "fixed", bb, "10.89.123.50")
        assert r.returncode == 0 and r.stdout.startswith("reply-from-")
        r = run_pbox("run", "--rm", "--network", "fixed", "--ip", "10.89.123.50", bb, "true",
                     expect_rc=125)
        assert "Address already in use" in r.stderr
        r = run_pbox("run", "--rm", "--network", "fixed", "--ip", "10.89.124.5", bb, "true",
                     expect_rc=125)
        assert r.stderr.startswith("Error: invalid address 10.89.124.5")
        r = run_pbox("run", "--rm", "--ip", "10.89.123.9", bb, "true", expect_rc=125)
        assert "user defined networks" in r.stderr
    finally:
        run_pbox("rm", "-f", "pinned", check=False)
        run_pbox("network", "rm", "fixed")
