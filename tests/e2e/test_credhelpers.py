"""docker credential helpers (``credHelpers`` / ``credsStore``): pull gets credentials
from ``docker-credential-NAME get``, login stores through ``store``, logout ``erase``.

The helper is a small real program written into a directory put on PATH; it keeps the
credentials as JSON files and logs each action it was asked for."""

from __future__ import annotations

import json
import os
import sys

import pytest

HELPER = """#!{python}
import json, os, sys
d = os.environ["PBOXTEST_CRED_DIR"]
action = sys.argv[1]
data = sys.stdin.read()
with open(os.path.join(d, "calls"), "a") as f:
    f.write(action + "\\n")
def path(server):
    return os.path.join(d, server.strip().replace("/", "_").replace(":", "_") + ".json")
if action == "get":
    try:
        with open(path(data)) as f:
            sys.stdout.write(f.read())
    except FileNotFoundError:
        print("credentials not found in native keychain")
        sys.exit(1)
elif action == "store":
    obj = json.loads(data)
    with open(path(obj["ServerURL"]), "w") as f:
        json.dump({{"ServerURL": obj["ServerURL"], "Username": obj["Username"],
                   "Secret": obj["Secret"]}}, f)
elif action == "erase":
    try:
        os.unlink(path(data))
    except FileNotFoundError:
        print("credentials not found in native keychain")
        sys.exit(1)
"""


@pytest.fixture
def helper(tmp_path):
    bindir = tmp_path / "bin"
    store = tmp_path / "store"
    bindir.mkdir()
    store.mkdir()
    prog = bindir / "docker-credential-pboxtest"
    prog.write_text(HELPER.format(python=sys.executable))
    prog.chmod(0o755)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PBOXTEST_CRED_DIR": str(store)}
    return env, store


def calls(store) -> list[str]:
    p = store / "calls"
    return p.read_text().split() if p.exists() else []


def write_auth(pbox_root, obj: dict) -> str:
    os.makedirs(pbox_root.config_dir, exist_ok=True)
    path = os.path.join(pbox_root.config_dir, "auth.json")
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_cred_helper_get_login_logout(registry_basic, test_images, run_pbox, pbox_root,
                                      helper):
    reg = registry_basic
    img = test_images(reg).busybox
    env, store = helper
    path = write_auth(pbox_root, {"credHelpers": {reg.host: "pboxtest"}})
    # nothing stored yet: the helper is asked and the registry refuses
    r = run_pbox("pull", "-q", img.reference, env=env, expect_rc=125)
    assert "unauthorized" in r.stderr.lower() or "authentication" in r.stderr.lower()
    assert "get" in calls(store)

    r = run_pbox("login", "-u", reg.username, "--password-stdin", reg.host,
                 input=reg.password + "\n", env=env)
    assert "Login Succeeded" in r.stdout
    assert "store" in calls(store)
    saved = json.loads((store / (reg.host.replace(":", "_") + ".json")).read_text())
    assert saved == {"ServerURL": reg.host, "Username": reg.username,
                     "Secret": reg.password}
    with open(path) as f:
        assert "auths" not in json.load(f)  # nothing written in the file itself

    r = run_pbox("pull", "-q", img.reference, env=env)
    assert r.stdout.strip() == img.reference
    r = run_pbox("login", "--get-login", reg.host, env=env)
    assert r.stdout.strip() == reg.username

    r = run_pbox("logout", reg.host, env=env)
    assert r.stdout.strip() == f"Removed login credentials for {reg.host}"
    assert calls(store)[-1] == "erase"
    assert not list(store.glob("*.json"))
    r = run_pbox("logout", reg.host, env=env, expect_rc=125)
    assert "not logged in" in r.stderr


def test_creds_store_in_docker_config(registry_basic, test_images, run_pbox, helper,
                                      tmp_path):
    reg = registry_basic
    img = test_images(reg).busybox
    env, store = helper
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({"credsStore": "pboxtest"}))
    (store / (reg.host.replace(":", "_") + ".json")).write_text(json.dumps(
        {"ServerURL": reg.host, "Username": reg.username, "Secret": reg.password}))
    env = dict(env, DOCKER_CONFIG=str(docker_dir))
    r = run_pbox("pull", "-q", img.reference, env=env)
    assert r.stdout.strip() == img.reference
    assert calls(store) == ["get"] or set(calls(store)) == {"get"}


def test_missing_helper_is_an_error_for_login(registry_basic, run_pbox, pbox_root):
    reg = registry_basic
    write_auth(pbox_root, {"credHelpers": {reg.host: "pbox-no-such-helper"}})
    r = run_pbox("login", "-u", reg.username, "--password-stdin", reg.host,
                 input=reg.password + "\n", expect_rc=125)
    assert "docker-credential-pbox-no-such-helper" in r.stderr
    assert "Traceback" not in r.stderr
