"""`pbox login` / `logout` against the basic-auth and token registries, as the test user."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest


def auth_path(pbox_root) -> str:
    return os.path.join(pbox_root.config_dir, "auth.json")


@pytest.fixture(params=["basic", "token"])
def auth_registry(request):
    return request.getfixturevalue(f"registry_{request.param}")


def test_wrong_password_fails_and_saves_nothing(auth_registry, run_pbox, pbox_root):
    reg = auth_registry
    wrong = "not-" + reg.password
    r = run_pbox("login", "-u", reg.username, "--password-stdin", reg.host,
                 input=wrong + "\n", expect_rc=125)
    assert r.stderr.startswith("Error: ")
    assert "unauthorized" in r.stderr
    assert "Traceback" not in r.stderr
    assert wrong not in r.stdout + r.stderr
    assert "Login Succeeded" not in r.stdout
    assert not os.path.exists(auth_path(pbox_root))

    # an unknown user is refused the same way
    r = run_pbox("login", "-u", "nobody-here", "-p", "x", reg.host, expect_rc=125)
    assert "unauthorized" in r.stderr
    assert not os.path.exists(auth_path(pbox_root))


def test_login_saves_0600_get_login_logout(auth_registry, run_pbox, pbox_root):
    reg = auth_registry
    r = run_pbox("login", "-u", reg.username, "--password-stdin", reg.host,
                 input=reg.password + "\n")
    assert r.stdout.strip() == "Login Succeeded"
    assert reg.password not in r.stdout + r.stderr
    path = auth_path(pbox_root)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        saved = json.load(f)
    token = saved["auths"][reg.host]["auth"]
    assert base64.b64decode(token).decode() == f"{reg.username}:{reg.password}"

    assert run_pbox("login", "--get-login", reg.host).stdout.strip() == reg.username

    r = run_pbox("logout", reg.host)
    assert r.stdout.strip() == f"Removed login credentials for {reg.host}"
    with open(path) as f:
        assert reg.host not in json.load(f).get("auths", {})
    r = run_pbox("logout", reg.host, expect_rc=125)
    assert "not logged in" in r.stderr
    r = run_pbox("login", "--get-login", reg.host, expect_rc=125)
    assert "not logged in" in r.stderr


def test_password_flag_warns_and_no_tty_cannot_prompt(registry_basic, run_pbox, pbox_root):
    reg = registry_basic
    r = run_pbox("login", "-u", reg.username, "-p", reg.password, reg.host)
    assert "Login Succeeded" in r.stdout
    assert "insecure" in r.stderr
    assert reg.password not in r.stderr
    run_pbox("logout", reg.host)

    # no password and no terminal: a clear error, nothing saved, nothing waited for
    r = run_pbox("login", "-u", reg.username, reg.host, input="", expect_rc=125)
    assert "TTY" in r.stderr
    r = run_pbox("login", "-p", "x", "--password-stdin", reg.host, input="x\n", expect_rc=125)
    assert "mutually exclusive" in r.stderr
    with open(auth_path(pbox_root)) as f:
        assert json.load(f).get("auths") == {}


@pytest.mark.parametrize("mode", ["plain", "tls"])
def test_login_to_registry_without_auth(mode, request, run_pbox):
    reg = request.getfixturevalue(f"registry_{mode}")
    tls = ["--cert-dir", reg.cert_dir] if reg.ca_path else []
    if tls:
        # an unknown CA is refused before any credential is sent or saved
        r = run_pbox("login", "-u", "someone", "--password-stdin", reg.host, input="pw\n",
                     expect_rc=125)
        assert r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1
    r = run_pbox("login", *tls, "-u", "someone", "--password-stdin", reg.host, input="pw\n")
    assert "Login Succeeded" in r.stdout


def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    import select

    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"no {marker!r} on the terminal; got {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other side closed
            chunk = b""
        assert chunk, f"the terminal closed before {marker!r}; got {bytes(seen)!r}"
        seen += chunk


def test_prompts_on_a_terminal_without_echoing_the_password(registry_token, pbox_cmd,
                                                             pbox_root):
    import pty
    import subprocess

    reg = registry_token
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    master, slave = pty.openpty()
    p = subprocess.Popen([*pbox_cmd, "login", reg.host], stdin=slave, stdout=slave,
                         stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"Username", seen)
        os.write(master, reg.username.encode() + b"\n")
        _read_until(master, b"Password", seen)
        os.write(master, reg.password.encode() + b"\n")
        _read_until(master, b"Login Succeeded", seen)
    finally:
        rc = p.wait(timeout=60)
        os.close(master)
    assert rc == 0
    assert reg.password.encode() not in seen
    with open(auth_path(pbox_root)) as f:
        assert reg.host in json.load(f)["auths"]
