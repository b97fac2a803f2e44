"""registries.conf: short-name search, aliases, mirrors, blocked and insecure registries,
and `pbox search`, against the harness registries."""

from __future__ import annotations

import socket

import pytest


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "registries.conf"

    def write(text: str) -> dict:
        path.write_text(text)
        return {"PBOX_REGISTRIES_CONF": str(path)}

    return write


def test_short_name_through_search_registries(registry_plain, test_images, run_pbox, conf):
    test_images(registry_plain)
    env = conf(f'unqualified-search-registries = ["127.0.0.1:{closed_port()}", '
               f'"{registry_plain.host}"]\n')
    r = run_pbox("pull", "-q", "pbox-test/busybox", env=env)
    assert r.stdout.strip() == f"{registry_plain.host}/pbox-test/busybox:latest"
    r = run_pbox("images", "--format", "{{.Repository}}:{{.Tag}}", env=env)
    assert f"{registry_plain.host}/pbox-test/busybox:latest" in r.stdout.split()
    # the short name finds the pulled image locally too
    r = run_pbox("image", "inspect", "--format", "{{.Id}}", "pbox-test/busybox", env=env)
    assert r.stdout.strip() == test_images(registry_plain).busybox.config_digest
    # a name found nowhere says where it looked
    r = run_pbox("pull", "-q", "pbox-test/nothing-here", env=env, expect_rc=125)
    assert "unqualified-search-registries" in r.stderr and "Traceback" not in r.stderr


def test_alias(registry_plain, test_images, run_pbox, conf):
    img = test_images(registry_plain).busybox
    env = conf(f'[aliases]\n"bbx" = "{registry_plain.host}/pbox-test/busybox"\n')
    r = run_pbox("pull", "-q", "bbx:latest", env=env)
    assert r.stdout.strip() == img.reference
    r = run_pbox("images", "-q", "--no-trunc", env=env)
    assert img.config_digest in r.stdout
    # run pulls through the alias when the image is missing
    run_pbox("rmi", img.reference, env=env)
    r = run_pbox("run", "--rm", "bbx", "cat", "/arch", env=env)
    assert r.stdout.strip() == img.markers["/arch"].strip()


def test_mirror_first_then_fallback(registry_plain, registry_basic, test_images, run_pbox,
                                    conf):
    img = test_images(registry_plain).busybox
    # the registry itself needs credentials we do not have: only the mirror can serve
    env = conf(f'[[registry]]\nlocation = "{registry_basic.host}"\n'
               f'[[registry.mirror]]\nlocation = "127.0.0.1:{closed_port()}"\n'
               f'[[registry.mirror]]\nlocation = "{registry_plain.host}"\n')
    r = run_pbox("pull", "-q", f"{registry_basic.host}/pbox-test/busybox", env=env)
    assert r.stdout.strip() == f"{registry_basic.host}/pbox-test/busybox:latest"
    r = run_pbox("images", "--format", "{{.Repository}}", env=env)
    assert f"{registry_basic.host}/pbox-test/busybox" in r.stdout.split()
    # a dead mirror falls through to the registry
    env = conf(f'[[registry]]\nlocation = "{registry_plain.host}"\n'
               f'[[registry.mirror]]\nlocation = "127.0.0.1:{closed_port()}"\n')
    r = run_pbox("pull", "-q", img.reference, env=env)
    assert r.stdout.strip() == img.reference


def test_blocked_registry(registry_plain, run_pbox, conf):
    env = conf(f'[[registry]]\nlocation = "{registry_plain.host}"\nblocked = true\n')
    r = run_pbox("pull", "-q", f"{registry_plain.host}/pbox-test/busybox", env=env,
                 expect_rc=125)
    assert r.stderr.strip() == (f"Error: registry {registry_plain.host} is blocked in "
                                f"registries.conf")


def test_insecure_registry_skips_verification(registry_tls, test_images, run_pbox, conf):
    img = test_images(registry_tls).busybox
    r = run_pbox("pull", "-q", img.reference, expect_rc=125)
    assert "certificate" in r.stderr
    env = conf(f'[[registry]]\nlocation = "{registry_tls.host}"\ninsecure = true\n')
    r = run_pbox("pull", "-q", img.reference, env=env)
    assert r.stdout.strip() == img.reference


def test_search_catalog(registry_plain, test_images, run_pbox, conf):
    test_images(registry_plain)
    host = registry_plain.host
    r = run_pbox("search", f"{host}/busy")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DESCRIPTION"]
    assert f"{host}/pbox-test/busybox" in [ln.split()[0] for ln in lines[1:]]
    assert all("busy" in ln for ln in lines[1:])
    r = run_pbox("search", "--limit", "1", "--format", "{{.Name}}", f"{host}/pbox-test")
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith(f"{host}/pbox-test/")
    # a bare term searches the unqualified-search-registries
    env = conf(f'unqualified-search-registries = ["{host}"]\n')
    r = run_pbox("search", "--no-trunc", "--format", "{{.Name}}", "zstd", env=env)
    assert r.stdout.split() == [f"{host}/pbox-test/zstd"]


def test_search_without_catalog_or_v1(registry_basic, run_pbox):
    # without credentials the basic-auth registry refuses its catalog and has no /v1/search
    r = run_pbox("search", f"{registry_basic.host}/busybox", expect_rc=125)
    assert r.stderr.startswith(f"Error: registry {registry_basic.host} supports neither")
    assert "Traceback" not in r.stderr


def test_push_refuses_blocked_and_honours_insecure(bb, registry_plain, registry_tls, run_pbox,
                                                  conf):
    env = conf(f'[[registry]]\nlocation = "{registry_plain.host}"\nblocked = true\n'
               f'[[registry]]\nlocation = "{registry_tls.host}"\ninsecure = true\n'
               f'[[registry.mirror]]\nlocation = "127.0.0.1:{closed_port()}"\n')
    r = run_pbox("push", "-q", bb, f"{registry_plain.host}/pbox-test/pushed:conf", env=env,
                 expect_rc=125)
    assert r.stderr.strip() == (f"Error: registry {registry_plain.host} is blocked in "
                                f"registries.conf")
    # no CA given: insecure lets the push through; the dead mirror is not used for push
    run_pbox("push", "-q", bb, f"{registry_tls.host}/pbox-test/pushed:conf", env=env)
    r = run_pbox("pull", "-q", f"{registry_tls.host}/pbox-test/pushed:conf", env=env)
    assert r.stdout.strip() == f"{registry_tls.host}/pbox-test/pushed:conf"


def test_login_honours_insecure_and_blocked(registry_tls, registry_plain, run_pbox, conf):
    r = run_pbox("login", "-u", "someone", "--password-stdin", registry_tls.host,
                 input="secret\n", expect_rc=125)
    assert "certificate" in r.stderr
    env = conf(f'[[registry]]\nlocation = "{registry_tls.host}"\ninsecure = true\n'
               f'[[registry]]\nlocation = "{registry_plain.host}"\nblocked = true\n')
    r = run_pbox("login", "-u", "someone", "--password-stdin", registry_tls.host,
                 input="secret\n", env=env)
    assert r.stdout.strip() == "Login Succeeded"
    r = run_pbox("login", "-u", "someone", "--password-stdin", registry_plain.host,
                 input="secret\n", env=env, expect_rc=125)
    assert r.stderr.strip() == (f"Error: registry {registry_plain.host} is blocked in "
                                f"registries.conf")
