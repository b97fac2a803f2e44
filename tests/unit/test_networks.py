"""The pure parts of user networks: records, subnets, link variables, MACs."""

from __future__ import annotations

import pytest

from pbox import networks
from pbox.errors import Conflict, NetworkNotFound, UsageError
from pbox.storage.store import Store


@pytest.fixture
def store(tmp_path):
    return Store.open(str(tmp_path / "root"), str(tmp_path / "run"))


def test_create_find_remove(store):
    a = networks.create(store, "na", labels={"k": "v"})
    b = networks.create(store, "b", subnet="10.89.200.0/24", internal=True)
    assert a["Subnet"] != b["Subnet"] and a["Subnet"].startswith("10.89.")
    assert not a["Subnet"].startswith("10.89.0.")
    assert a["Gateway"] == a["Subnet"].replace(".0/24", ".1")
    assert networks.find(store, "na")["Id"] == a["Id"]
    assert networks.find(store, a["Id"][:10])["Name"] == "na"
    assert networks.inspect(store, "b")["Internal"] is True
    with pytest.raises(Conflict, match="network with name na already exists"):
        networks.create(store, "na")
    with pytest.raises(Conflict, match="Pool overlaps"):
        networks.create(store, "c", subnet="10.89.200.128/25")
    for bad in ("bridge", "host", "none"):
        with pytest.raises(Conflict):
            networks.create(store, bad)
    with pytest.raises(UsageError):
        networks.create(store, "-x")
    with pytest.raises(UsageError):
        networks.create(store, "d", subnet="10.89.201.1/24")  # host bits set
    assert networks.remove(store, "na") == "na"
    # (not "a": that is also a prefix of any id starting with a)
    with pytest.raises(NetworkNotFound, match="network na not found"):
        networks.find(store, "na")
    with pytest.raises(Conflict, match="pre-defined"):
        networks.remove(store, "bridge")
    names = [r["Name"] for r in networks.list_rows(store)]
    assert names == ["b", "bridge", "host", "none"]
    assert [r["Name"] for r in networks.list_rows(store, {"type": "custom"})] == ["b"]
    assert networks.prune(store) == ["b"]


def test_predefined_ids_are_stable():
    import hashlib

    for name, nid in networks.PREDEFINED_IDS.items():
        assert nid == hashlib.sha256(f"pbox-network-{name}".encode()).hexdigest()


def test_user_network_names():
    for mode in ("pasta", "slirp4netns:allow_host_loopback=true", "host", "none",
                 "container:abc", "bridge", "default", ""):
        assert not networks.is_user_network(mode)
    assert networks.is_user_network("mynet")


def test_mac_follows_the_address():
    assert networks._mac("10.89.1.2") == "02:42:0a:59:01:02"


def test_link_variables():
    cfg = {"Config": {"ExposedPorts": {"6379/tcp": {}, "80/tcp": {}, "53/udp": {}},
                      "Env": ["PATH=/bin", "HOME=/root", "REDIS_VERSION=7", "X=a=b"]}}
    env = networks.link_env("fan-redis", "web", "fan-redis-1", "10.88.0.2", cfg)
    assert env[0] == "FAN_REDIS_PORT=udp://10.88.0.2:53"  # docker: the lowest port
    assert "FAN_REDIS_PORT_6379_TCP=tcp://10.88.0.2:6379" in env
    assert "FAN_REDIS_PORT_6379_TCP_ADDR=10.88.0.2" in env
    assert "FAN_REDIS_PORT_80_TCP_PORT=80" in env
    assert "FAN_REDIS_PORT_53_UDP_PROTO=udp" in env
    assert "FAN_REDIS_NAME=/web/fan-redis" in env
    assert "FAN_REDIS_ENV_REDIS_VERSION=7" in env and "FAN_REDIS_ENV_X=a=b" in env
    assert not any("_ENV_PATH" in e or "_ENV_HOME" in e for e in env)


def test_parse_link():
    assert networks.parse_link("redis") == ("redis", "redis")
    assert networks.parse_link("/fan-redis-1:redis") == ("fan-redis-1", "redis")
    with pytest.raises(UsageError):
        networks.parse_link(":x")


def test_netlink_attributes_are_padded():
    from pbox.rootless import netlink

    assert netlink._str(netlink.IFLA_IFNAME, "eth0") == b"\x09\x00\x03\x00eth0\x00\x00\x00\x00"
    assert netlink._u32(netlink.IFLA_MTU, 1500) == b"\x08\x00\x04\x00\xdc\x05\x00\x00"
    assert netlink._mac("02:42:0a:59:01:02") == bytes([2, 0x42, 10, 0x59, 1, 2])
    nested = netlink._attr(netlink.IFLA_LINKINFO, netlink._str(netlink.IFLA_INFO_KIND, "veth"))
    assert len(nested) % 4 == 0 and nested[:2] == (4 + 12).to_bytes(2, "little")
