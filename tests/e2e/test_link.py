"""docker's legacy links: --link NAME[:ALIAS] between containers on the default network."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def bb(registry_plain, test_images, run_pbox):
    ref = test_images(registry_plain).busybox.reference
    run_pbox("pull", "-q", ref)
    return ref


SERVER = "while true; do echo reply-from-redis | nc -l -p 6379; done"


def test_tutorial_link_by_alias(bb, run_pbox):
    """`docker run --link fan-redis-1:redis`: the alias resolves to the linked container
    (on the default network, which has no names of its own) and docker's variables are
    set."""
    run_pbox("run", "-d", "--name", "fan-redis-1", "--expose", "6379", "-e", "REDIS_VERSION=7",
             bb, "sh", "-c", SERVER)
    try:
        r = run_pbox("run", "--rm", "--name", "web-1", "--link", "fan-redis-1:redis", bb,
                     "sh", "-c", "for i in $(seq 50); do nc redis 6379 </dev/null && break; "
                     "sleep 0.1; done; env | grep ^REDIS_ | sort; cat /etc/hosts")
        lines = r.stdout.splitlines()
        assert lines[0] == "reply-from-redis"
        env = dict(ln.split("=", 1) for ln in lines if ln.startswith("REDIS_"))
        ip = env["REDIS_PORT_6379_TCP_ADDR"]
        assert env["REDIS_PORT"] == f"tcp://{ip}:6379"
        assert env["REDIS_PORT_6379_TCP"] == f"tcp://{ip}:6379"
        assert env["REDIS_PORT_6379_TCP_PORT"] == "6379"
        assert env["REDIS_PORT_6379_TCP_PROTO"] == "tcp"
        assert env["REDIS_NAME"] == "/web-1/redis"
        assert env["REDIS_ENV_REDIS_VERSION"] == "7"
        assert "REDIS_ENV_PATH" not in env
        assert any(ln.split()[:1] == [ip] and "redis" in ln.split() and
                   "fan-redis-1" in ln.split() for ln in lines)
        # without the link, the default network knows no names
        r = run_pbox("run", "--rm", bb, "ping", "-c1", "-W1", "redis", check=False)
        assert r.returncode != 0
        # the link without an alias: the name itself
        r = run_pbox("run", "--rm", "--link", "fan-redis-1", bb, "sh", "-c",
                     "nc fan-redis-1 6379 </dev/null; echo $FAN_REDIS_1_NAME")
        assert r.stdout.splitlines()[-1].endswith("/fan-redis-1")
        assert "reply-from-redis" in r.stdout
    finally:
        run_pbox("rm", "-f", "fan-redis-1")
    info = json.loads(run_pbox("network", "inspect", "bridge").stdout)[0]
    assert info["Containers"] == {}


def test_link_errors(bb, run_pbox):
    r = run_pbox("run", "--rm", "--link", "nosuch:x", bb, "true", expect_rc=125)
    assert r.stderr.startswith("Error: ") and "nosuch" in r.stderr
    run_pbox("create", "--name", "stopped", bb, "true")
    try:
        r = run_pbox("run", "--rm", "--name", "linker", "--link", "stopped:db", bb, "true",
                     expect_rc=125)
        assert r.stderr == ("Error: Cannot link to a non running container: /stopped AS "
                            "/linker/db\n")
        r = run_pbox("run", "--rm", "--network", "host", "--link", "stopped:db", bb, "true",
                     expect_rc=125)
        assert "can't be used with links" in r.stderr
    finally:
        run_pbox("rm", "-f", "stopped")
    assert run_pbox("ps", "-aq").stdout == ""


def test_link_to_a_container_on_a_user_network(bb, run_pbox):
    """The target is on a user network, the linking container on the default one: both
    meet on bridge; a linking container on the same user network reaches it there."""
    run_pbox("network", "create", "backend")
    try:
        run_pbox("run", "-d", "--name", "db", "--network", "backend", bb, "sh", "-c",
                 SERVER)
        script = ("for i in $(seq 50); do nc store 6379 </dev/null && break; sleep 0.1; "
                  "done; echo addr=$STORE_NAME")
        r = run_pbox("run", "--rm", "--name", "app", "--link", "db:store", bb, "sh", "-c",
                     script)
        assert r.stdout == "reply-from-redis\naddr=/app/store\n"
        r = run_pbox("run", "--rm", "--network", "backend", "--link", "db:store", bb, "sh",
                     "-c", "nc store 6379 </dev/null; grep -w store /etc/hosts")
        ip = json.loads(run_pbox("inspect", "db").stdout)[0][
            "NetworkSettings"]["Networks"]["backend"]["IPAddress"]
        assert r.stdout.splitlines()[0] == "reply-from-redis"
        assert r.stdout.splitlines()[1].split()[0] == ip
    finally:
        run_pbox("rm", "-f", "db", check=False)
        run_pbox("network", "rm", "backend")
