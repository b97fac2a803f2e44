from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from pbox.errors import AuthError, UsageError
from pbox.oci import auth
from pbox.oci.auth import Credentials, parse_challenges


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def write(path, obj) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "PATH": str(tmp_path / "bin")}


def test_paths_in_order(tmp_path, env):
    env = dict(
        env, REGISTRY_AUTH_FILE="/r/auth.json", XDG_RUNTIME_DIR="/run/user/7", DOCKER_CONFIG="/d"
    )
    assert auth.auth_file_paths("/cfg", env=env) == [
        "/cfg/auth.json",
        "/r/auth.json",
        "/run/user/7/containers/auth.json",
        env["HOME"] + "/.config/containers/auth.json",
        "/d/config.json",
    ]
    assert auth.auth_file_paths("/cfg", authfile="/x.json", env=env) == ["/x.json"]
    plain = auth.auth_file_paths(None, env={"HOME": "/h"})
    assert plain == ["/h/.config/containers/auth.json", "/h/.docker/config.json"]


def test_docker_hub_legacy_key(env):
    write(
        env["HOME"] + "/.docker/config.json",
        {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")}}},
    )
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        creds = auth.lookup(name, "library/busybox", env=env)
        assert creds == Credentials("hubuser", "hubpass", "", creds.source)
    assert auth.lookup("quay.io", env=env) is None


@pytest.mark.parametrize(
    "key",
    [
        "reg.example:5000",
        "https://reg.example:5000",
        "http://reg.example:5000/v2/",
        "reg.example:5000/",
    ],
)
def test_key_forms(env, key):
    write(env["HOME"] + "/.config/containers/auth.json", {"auths": {key: {"auth": b64("u:p:w")}}})
    creds = auth.lookup("reg.example:5000", "a/b", env=env)
    assert (creds.username, creds.password) == ("u", "p:w")


def test_repository_scoped_keys_most_specific_first(env):
    write(
        env["HOME"] + "/.config/containers/auth.json",
        {
            "auths": {
                "quay.io": {"auth": b64("all:1")},
                "quay.io/team": {"auth": b64("team:2")},
                "quay.io/team/app": {"auth": b64("app:3")},
            }
        },
    )
    assert auth.lookup("quay.io", "team/app", env=env).username == "app"
    assert auth.lookup("quay.io", "team/other", env=env).username == "team"
    assert auth.lookup("quay.io", "else/x", env=env).username == "all"
    assert auth.lookup("quay.io", None, env=env).username == "all"


def test_first_file_wins_and_pbox_file_first(tmp_path, env):
    cfg = tmp_path / "cfg"
    write(str(cfg / "auth.json"), {"auths": {"r.io": {"auth": b64("mine:1")}}})
    write(
        env["HOME"] + "/.docker/config.json",
        {"auths": {"r.io": {"auth": b64("docker:2")}, "s.io": {"auth": b64("docker:3")}}},
    )
    assert auth.lookup("r.io", config_dir=str(cfg), env=env).username == "mine"
    assert auth.lookup("s.io", config_dir=str(cfg), env=env).password == "3"


def test_registry_auth_file_and_xdg_runtime(tmp_path, env):
    rf = write(str(tmp_path / "ra.json"), {"auths": {"a.io": {"auth": b64("ra:1")}}})
    write(str(tmp_path / "run/containers/auth.json"), {"auths": {"b.io": {"auth": b64("rt:2")}}})
    e = dict(env, REGISTRY_AUTH_FILE=rf, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    assert auth.lookup("a.io", env=e).username == "ra"
    assert auth.lookup("b.io", env=e).username == "rt"


def test_username_password_fields_and_identity_token(env):
    write(
        env["HOME"] + "/.docker/config.json",
        {
            "auths": {
                "a.io": {"username": "u", "password": "p"},
                "b.io": {"identitytoken": "refresh-me"},
                "c.io": {},
            }
        },
    )
    assert auth.lookup("a.io", env=env).password == "p"
    b = auth.lookup("b.io", env=env)
    assert b.identity_token == "refresh-me" and not b.username
    assert auth.lookup("c.io", env=env) is None


def test_repr_hides_secrets():
    c = Credentials("user", "hunter2", "tok-abc")
    assert "hunter2" not in repr(c) and "tok-abc" not in repr(c) and "user" in repr(c)


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "invalid credentials file"),
        ("[1]", "JSON object"),
        ('{"auths": {"a.io": {"auth": "%%%%"}}}', "invalid credentials"),
        ('{"auths": {"a.io": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}', "':'"),
    ],
)
def test_bad_files(env, content, words):
    path = env["HOME"] + "/.docker/config.json"
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(content)
    with pytest.raises(AuthError) as e:
        auth.lookup("a.io", env=env)
    assert words in str(e.value)


def make_helper(bindir, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    p = bindir / f"docker-credential-{name}"
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(0o755)


def test_cred_helpers(tmp_path, env):
    make_helper(
        tmp_path / "bin",
        "fake",
        """
[ "$1" = get ] || exit 3
read server
case "$server" in
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"hub","Secret":"hubsecret"}';;
  gcr.io) echo '{"ServerURL":"gcr.io","Username":"<token>","Secret":"idtok"}';;
  *) echo "credentials not found in native keychain"; exit 1;;
esac
""",
    )
    env = dict(env, PATH=str(tmp_path / "bin") + ":/usr/bin:/bin")
    write(
        env["HOME"] + "/.docker/config.json",
        {"credHelpers": {"gcr.io": "fake", "docker.io": "fake", "other.io": "fake"}},
    )
    hub = auth.lookup("docker.io", "library/x", env=env)
    assert (hub.username, hub.password) == ("hub", "hubsecret")
    gcr = auth.lookup("gcr.io", env=env)
    assert gcr.identity_token == "idtok" and gcr.username == ""
    assert auth.lookup("other.io", env=env) is None


def test_creds_store_falls_back_to_auths(tmp_path, env):
    make_helper(
        tmp_path / "bin",
        "store",
        """
read server
[ "$server" = a.io ] && { echo '{"Username":"fromstore","Secret":"s"}'; exit 0; }
echo "credentials not found in native keychain"; exit 1
""",
    )
    env = dict(env, PATH=str(tmp_path / "bin") + ":/usr/bin:/bin")
    write(
        env["HOME"] + "/.docker/config.json",
        {"credsStore": "store", "auths": {"a.io": {}, "b.io": {"auth": b64("file:f")}}},
    )
    assert auth.lookup("a.io", env=env).username == "fromstore"
    assert auth.lookup("b.io", env=env).username == "file"


def test_missing_helper_is_skipped(env, caplog):
    write(
        env["HOME"] + "/.docker/config.json",
        {"credsStore": "nonexistent-helper", "auths": {"a.io": {"auth": b64("u:p")}}},
    )
    assert auth.lookup("a.io", env=env).username == "u"
    assert "docker-credential-nonexistent-helper" in caplog.text


def test_store_and_erase(tmp_path):
    path = str(tmp_path / "cfg" / "auth.json")
    auth.store(path, "127.0.0.1:5000", "alice", "s3cret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    auth.store(path, "https://index.docker.io/v1/", "bob", "pw")
    with open(path) as f:
        data = json.load(f)
    assert set(data["auths"]) == {"127.0.0.1:5000", "docker.io"}
    assert auth.lookup_in_file(path, "127.0.0.1:5000").password == "s3cret"
    auth.store(path, "127.0.0.1:5000", "alice", "new")  # replaces
    assert auth.lookup_in_file(path, "127.0.0.1:5000").password == "new"
    assert [n for n in os.listdir(os.path.dirname(path)) if n != "auth.json"] == []
    assert auth.erase(path, "127.0.0.1:5000") is True
    assert auth.erase(path, "127.0.0.1:5000") is False
    assert auth.lookup_in_file(path, "docker.io").username == "bob"
    assert auth.erase(str(tmp_path / "missing.json"), "x.io") is False


def test_store_keeps_other_content(tmp_path):
    path = write(
        str(tmp_path / "config.json"),
        {"auths": {"https://a.io": {"auth": b64("x:y")}}, "credsStore": "desktop", "other": 1},
    )
    auth.store(path, "a.io", "new", "pw")
    with open(path) as f:
        data = json.load(f)
    assert data["other"] == 1 and data["credsStore"] == "desktop"
    assert list(data["auths"]) == ["a.io"]


def test_store_refuses_bad_user(tmp_path):
    with pytest.raises(UsageError):
        auth.store(str(tmp_path / "a.json"), "a.io", "a:b", "pw")


def test_parse_bearer():
    (ch,) = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull,push"'
    )
    assert ch.scheme == "bearer"
    assert ch.realm == "https://auth.docker.io/token"
    assert ch.service == "registry.docker.io"
    assert ch.scope == "repository:library/busybox:pull,push"


def test_parse_several_and_odd_forms():
    chs = parse_challenges(
        'Basic realm="Registry Realm", BEARER realm=http://x/t, '
        'error="insufficient_scope",scope="a b" , Negotiate'
    )
    assert [c.scheme for c in chs] == ["basic", "bearer", "negotiate"]
    assert chs[0].realm == "Registry Realm"
    assert chs[1].params == {"realm": "http://x/t", "error": "insufficient_scope", "scope": "a b"}
    (ch,) = parse_challenges('Bearer realm="a\\"b,c"')
    assert ch.realm == 'a"b,c'
    (ch,) = parse_challenges('Bearer realm="r"')
    assert ch.service is None
    assert parse_challenges("") == [] and parse_challenges(None) == []


def test_helper_server_url_and_keys():
    assert auth.helper_server_url("docker.io") == "https://index.docker.io/v1/"
    assert auth.helper_server_url("quay.io") == "quay.io"
    assert auth.normalize_key("https://index.docker.io/v1/") == "docker.io"
    assert auth.normalize_key("quay.io/team/") == "quay.io/team"
