"""-p/-P/--expose parsing, the port records, and pasta's command line."""

from __future__ import annotations

import socket

import pytest

from pbox.containers import ports
from pbox.containers.ports import PortBinding
from pbox.errors import PboxError, UsageError
from pbox.rootless import network


def test_parse_publish_forms():
    assert ports.parse_publish("80") == [PortBinding(80)]
    assert ports.parse_publish("5080:80") == [PortBinding(80, "tcp", "", 5080)]
    assert ports.parse_publish("127.0.0.1:5080:80/udp") == [
        PortBinding(80, "udp", "127.0.0.1", 5080)]
    assert ports.parse_publish("127.0.0.1::80") == [PortBinding(80, "tcp", "127.0.0.1", 0)]
    assert ports.parse_publish("0.0.0.0:5080:80") == [PortBinding(80, "tcp", "", 5080)]
    assert ports.parse_publish("[::1]:5080:80") == [PortBinding(80, "tcp", "::1", 5080)]
    assert ports.parse_publish("8000-8002:80-82") == [
        PortBinding(80, "tcp", "", 8000), PortBinding(81, "tcp", "", 8001),
        PortBinding(82, "tcp", "", 8002)]
    assert ports.parse_publish("80-81") == [PortBinding(80), PortBinding(81)]
    assert ports.parse_publish("8000-8001:80") == [PortBinding(80, "tcp", "", 8000)]


@pytest.mark.parametrize("bad", ["", "x", "0", "70000", "80/sctp", "1:2:3:4",
                                 "8000-8002:80-81", "999.1.1.1:80:80", "82-80", "5080:"])
def test_parse_publish_rejects(bad):
    with pytest.raises(UsageError):
        ports.parse_publish(bad)


def test_expose_and_publish_all():
    exposed = ports.exposed_ports({"443/tcp": {}}, ["80", "53/udp", "9000-9001"])
    assert exposed == {"443/tcp": {}, "80/tcp": {}, "53/udp": {}, "9000/tcp": {},
                       "9001/tcp": {}}
    got = ports.requested(["5080:80"], True, exposed)
    assert got[0] == PortBinding(80, "tcp", "", 5080)
    assert sorted(b.key for b in got[1:]) == ["443/tcp", "53/udp", "9000/tcp", "9001/tcp"]
    assert all(b.host_port == 0 for b in got[1:])
    assert ports.requested(["5080:80"], False, exposed) == [PortBinding(80, "tcp", "", 5080)]
    with pytest.raises(UsageError):
        ports.requested(["5080:80", "5080:81"], False, {})


def test_records_round_trip_and_texts():
    bindings = [PortBinding(80, "tcp", "", 5080), PortBinding(53, "udp", "127.0.0.1", 5353)]
    rec = ports.port_bindings_record(bindings + [PortBinding(81)])
    assert rec == {"80/tcp": [{"HostIp": "", "HostPort": "5080"}],
                   "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
                   "81/tcp": [{"HostIp": "", "HostPort": ""}]}
    cfg = {"HostConfig": {"PortBindings": rec, "PublishAllPorts": True},
           "Config": {"ExposedPorts": {"80/tcp": {}, "8080/tcp": {}}}}
    assert ports.bindings_from_config(cfg) == bindings + [PortBinding(81), PortBinding(8080)]
    m = ports.ports_map(bindings, {"443/tcp": {}})
    assert m == {"443/tcp": None, "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5080"}],
                 "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}
    assert ports.ps_text(m) == "127.0.0.1:5353->53/udp, 0.0.0.0:5080->80/tcp, 443/tcp"
    assert ports.port_lines(m) == ["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:5080"]
    assert ports.port_lines(m, "80") == ["0.0.0.0:5080"]
    assert ports.port_lines(m, "53/udp") == ["127.0.0.1:5353"]
    assert ports.port_lines(m, "53") == []
    st = {"Status": "running", "NetworkSettings": {"Ports": m, "IPAddress": "10.0.2.100"}}
    assert ports.live_ports(st) == m
    assert ports.live_ports({**st, "Status": "exited"}) == {}
    ns = ports.network_settings({"HostConfig": {"NetworkMode": "pasta"}}, st)
    assert ns["IPAddress"] == "10.0.2.100" and ns["Ports"] == m


def test_check_free_and_assign():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        with pytest.raises(PboxError, match=f"port {port} is already in use"):
            ports.check_free([PortBinding(80, "tcp", "127.0.0.1", port)])
    finally:
        s.close()
    ports.check_free([PortBinding(80, "tcp", "127.0.0.1", port)])
    got = ports.assign_free_ports([PortBinding(80, "tcp", "127.0.0.1"), PortBinding(81, "tcp",
                                                                                    "", 6000)])
    assert got[0].host_port > 0 and got[1].host_port == 6000


def test_network_modes_and_resolvers():
    assert network.parse_mode("slirp4netns:allow_host_loopback=true") == (
        "slirp4netns", {"allow_host_loopback": "true"})
    assert network.container_nameservers("slirp4netns", ["1.1.1.1"]) == ["10.0.2.3"]
    assert network.container_nameservers("pasta", ["127.0.0.53"]) == [
        network.PASTA_DNS_FORWARD]
    assert network.container_nameservers("pasta", ["127.0.0.53", "10.1.1.1"]) == ["10.1.1.1"]


def test_pasta_args():
    fw = [network.Forward("tcp", "127.0.0.1", 5080, 80), network.Forward("tcp", "", 81, 82),
          network.Forward("udp", "", 5353, 53)]
    args = network.pasta_args(fw, netns="/proc/self/fd/5", pidfile="/p", runas="0:0")
    assert args[args.index("--netns") + 1] == "/proc/self/fd/5"
    pairs = list(zip(args, args[1:]))
    assert ("-t", "127.0.0.1/5080:80") in pairs and ("-t", "81:82") in pairs
    assert ("-u", "5353:53") in pairs and ("-T", "none") in pairs and ("-U", "none") in pairs
    args = network.pasta_args([], netns="n", pidfile="/p", dns_forward="169.254.1.1")
    pairs = list(zip(args, args[1:]))
    assert ("-t", "none") in pairs and ("-u", "none") in pairs
    assert ("--dns-forward", "169.254.1.1") in pairs


def test_missing_helper_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PboxError, match="passt package"):
        network.binary("pasta")
