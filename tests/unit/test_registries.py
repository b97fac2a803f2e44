"""registries.conf: the TOML subset reader and name resolution."""

from __future__ import annotations

import pytest

from pbox import registries
from pbox.errors import PboxError

SAMPLE = """
# comment
unqualified-search-registries = ["127.0.0.1:5000",
  "docker.io",   # trailing comment
]

[aliases]
"app" = "127.0.0.1:5000/team/app"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "127.0.0.1:5001"
insecure = true

[[registry.mirror]]
location = '127.0.0.1:5002/cache'

[[registry]]
location = "evil.example.com"
blocked = true
"""


def conf():
    return registries.from_dict(registries.parse_toml(SAMPLE), "test.conf")


def test_parse_sample():
    c = conf()
    assert c.search == ["127.0.0.1:5000", "docker.io"]
    assert c.aliases == {"app": "127.0.0.1:5000/team/app"}
    hub, evil = c.registries
    assert hub.prefix == "docker.io" and [m.location for m in hub.mirrors] == [
        "127.0.0.1:5001", "127.0.0.1:5002/cache"]
    assert hub.mirrors[0].insecure and not hub.mirrors[1].insecure
    assert evil.blocked and evil.prefix == "evil.example.com"


def test_short_names_aliases_and_qualified():
    c = conf()
    assert [r.string() for r in registries.candidates(c, "busybox")] == [
        "127.0.0.1:5000/busybox:latest", "docker.io/library/busybox:latest"]
    assert [r.string() for r in registries.candidates(c, "app:1")] == [
        "127.0.0.1:5000/team/app:1"]
    assert [r.string() for r in registries.candidates(c, "quay.io/a/b")] == [
        "quay.io/a/b:latest"]


def test_sources_mirrors_first_and_blocked():
    c = conf()
    ref = registries.candidates(c, "docker.io/library/alpine")[0]
    got = [(s.registry, s.repository, s.insecure, s.mirror) for s in registries.sources(c, ref)]
    assert got == [("127.0.0.1:5001", "library/alpine", True, True),
                   ("127.0.0.1:5002", "cache/library/alpine", False, True),
                   ("docker.io", "library/alpine", False, False)]
    assert len(registries.sources(c, ref, pull=False)) == 1
    with pytest.raises(PboxError, match="registry evil.example.com is blocked"):
        registries.sources(c, registries.candidates(c, "evil.example.com/x")[0])


def test_defaults_and_errors():
    c = registries.from_dict({})
    assert c.search == ["docker.io"]
    with pytest.raises(registries.ConfigError):
        registries.parse_toml("x = bogus")
    with pytest.raises(registries.ConfigError):
        registries.parse_toml("[[registry.mirror]]\nlocation = 'a'")


def test_documented_sample_parses():
    import os

    sample = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "registries.conf.sample")
    with open(sample) as f:
        c = registries.from_dict(registries.parse_toml(f.read()))
    assert c.search[-1] == "docker.io" and "app" in c.aliases
    assert any(r.blocked for r in c.registries)
    assert any(r.mirrors for r in c.registries)
