from __future__ import annotations

import pytest

from pbox.errors import InvalidReference, PboxError
from pbox.oci import reference
from pbox.oci.reference import Reference, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, full, familiar",
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("user/app/deep", "docker.io/user/app/deep:latest", "user/app/deep:latest"),
        ("quay.io/a/b:tag", "quay.io/a/b:tag", "quay.io/a/b:tag"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
        ("host:5000/a/b:tag", "host:5000/a/b:tag", "host:5000/a/b:tag"),
        ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
        ("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1"),
        ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
        ("busybox@" + D, "docker.io/library/busybox@" + D, "busybox@" + D),
        ("busybox:1@" + D, "docker.io/library/busybox:1@" + D, "busybox:1@" + D),
        ("a/b-c__d.e_f:Tag_1.0-x", "docker.io/a/b-c__d.e_f:Tag_1.0-x", "a/b-c__d.e_f:Tag_1.0-x"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        # a registry name may have capitals
        ("Registry.Example/x", "Registry.Example/x:latest", "Registry.Example/x:latest"),
    ],
)
def test_normalisation(text, full, familiar):
    ref = parse(text)
    assert ref.string() == full
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_fields():
    ref = parse("127.0.0.1:5000/a/b:t@" + D)
    assert ref == Reference("127.0.0.1:5000", "a/b", "t", D)
    assert ref.name == "127.0.0.1:5000/a/b"
    assert ref.familiar_name() == "127.0.0.1:5000/a/b"
    assert ref.manifest_ref == D
    assert parse("busybox").manifest_ref == "latest"


def test_default_tag_can_be_left_out():
    ref = parse("busybox", default_tag=None)
    assert ref.tag is None and ref.digest is None
    assert ref.string() == "docker.io/library/busybox"
    assert ref.familiar() == "busybox"
    assert parse("busybox@" + D).tag is None


def test_api_registry():
    assert parse("busybox").api_registry == "registry-1.docker.io"
    assert parse("quay.io/x").api_registry == "quay.io"
    assert parse("localhost:5000/x").api_registry == "localhost:5000"


def test_with_tag_and_digest():
    ref = parse("busybox:1@" + D)
    assert ref.with_tag("2").string() == "docker.io/library/busybox:2"
    assert parse("busybox").with_digest(D).string() == "docker.io/library/busybox@" + D
    assert parse("busybox:1").with_digest(D, keep_tag=True).familiar() == "busybox:1@" + D
    with pytest.raises(InvalidReference):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidReference):
        ref.with_digest("sha256:abc")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "busybox:",
        ":tag",
        "/busybox",
        "busybox/",
        "a//b",
        "a..b",
        "a___b",
        "-abc",
        "abc-",
        "busybox:-tag",
        "busybox:" + "t" * 129,
        "busybox@sha256:abc",
        "busybox@" + D + "x",
        "busybox@@" + D,
        "host:port/x",
        "busy box",
        "a b/c",
        "busybox:tag:tag",
    ],
)
def test_invalid(text):
    with pytest.raises(InvalidReference) as e:
        parse(text)
    assert "invalid" in str(e.value)


@pytest.mark.parametrize(
    "text", ["Busybox", "user/App", "UPPER/case", "localhost:5000/Up:tag", "docker.io/Abc"]
)
def test_uppercase_rejected(text):
    with pytest.raises(InvalidReference) as e:
        parse(text)
    assert "invalid reference format" in str(e.value)
    assert "must be lowercase" in str(e.value)


def test_uppercase_tag_allowed():
    assert parse("busybox:LATEST").tag == "LATEST"


def test_hex_id_is_not_a_name():
    with pytest.raises(InvalidReference) as e:
        parse("ab" * 32)
    assert "64-byte hexadecimal" in str(e.value)


def test_name_length_limit():
    long = "a" * 250
    parse("x/" + long[:240])
    with pytest.raises(InvalidReference) as e:
        parse("quay.io/" + long)
    assert "255" in str(e.value)


def test_errors_are_pbox_errors():
    with pytest.raises(PboxError):
        parse("UPPER")


def test_parse_name():
    assert reference.parse_name("busybox").string() == "docker.io/library/busybox"
    with pytest.raises(InvalidReference):
        reference.parse_name("busybox:1")


def test_helpers():
    assert reference.is_valid_tag("v1.0_x")
    assert not reference.is_valid_tag(".v1")
    assert reference.is_valid_registry("127.0.0.1:5000")
    assert reference.is_valid_registry("[::1]:5000")
    assert not reference.is_valid_registry("a_b.com")
    assert reference.is_valid_repository("a/b-c")
    assert not reference.is_valid_repository("a/B")
    assert reference.registry_host("127.0.0.1:5000") == "127.0.0.1"
    assert reference.registry_host("[::1]:5000") == "::1"
    assert reference.registry_host("quay.io") == "quay.io"
    assert reference.normalize_registry("https://index.docker.io/v1/") == "docker.io"
    assert reference.normalize_registry("registry-1.docker.io") == "docker.io"
    assert reference.normalize_registry("http://localhost:5000") == "localhost:5000"


# -- the hand-written grammar against distribution/reference's regular expressions -------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_DOMAIN = r"(?:" + _DOMAIN_NAME + r"|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = r"(?:" + _DOMAIN + r"/)?" + _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_REFERENCE = (r"(?P<name>" + _NAME + r")(?::(?P<tag>" + _TAG + r"))?"
              r"(?:@(?P<digest>" + _DIGEST + r"))?")


def _fragments():
    """Pieces that make near-misses of every rule when glued at random."""
    return ["a", "b0", "Z", "9", ".", "_", "__", "-", "--", ":", "/", "@", "[", "]",
            "::1", "5000", "localhost", "example.com", "sha256", "ab" * 16, "Ab" * 16,
            "é", " ", "\n", "x" * 130, "+", "A.b", "-a", "a-"]


def _random_strings(n: int, seed: int, pieces=None):
    import random

    rng = random.Random(seed)
    pieces = pieces or _fragments()
    for _ in range(n):
        yield "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))


def test_grammar_matches_distribution_regexps():
    import re

    reference_re = re.compile(_REFERENCE, re.ASCII)
    checks = [
        (reference._is_tag, re.compile(_TAG, re.ASCII)),
        (reference._is_domain, re.compile(_DOMAIN, re.ASCII)),
        (reference._is_path, re.compile(_PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*")),
        (reference._is_digest, re.compile(_DIGEST, re.ASCII)),
        (reference._is_name, re.compile(_NAME, re.ASCII)),
    ]
    tried = accepted = 0
    for s in _random_strings(60000, seed=7):
        for fn, pattern in checks:
            assert fn(s) == bool(pattern.fullmatch(s)), (fn.__name__, s)
        m = reference_re.fullmatch(s)
        want = None if m is None else (m.group("name"), m.group("tag"), m.group("digest"))
        assert reference._split(s) == want, s
        tried += 1
        accepted += want is not None
    # the corpus reaches both outcomes often enough to mean something
    assert tried == 60000 and accepted > 1000, accepted
    digest_re = re.compile(_DIGEST, re.ASCII)
    digests = 0
    algorithms = _random_strings(20000, seed=8, pieces=["sha256", "a", "B", "1", "+", ".",
                                                         "_", "-", "g", ":"])
    hexes = _random_strings(20000, seed=9, pieces=["0f" * 16, "Ab9" * 11, "1", "g", ":"])
    for algorithm, hexpart in zip(algorithms, hexes):
        s = algorithm + ":" + hexpart
        assert reference._is_digest(s) == bool(digest_re.fullmatch(s)), s
        digests += reference._is_digest(s)
    assert digests > 300, digests


@pytest.mark.parametrize("text", ["busybox\n", "busybox:1\n", "a/b@sha256:" + "ab" * 32 + "\n",
                                  "busybox:café"])
def test_trailing_newline_and_non_ascii_refused(text):
    with pytest.raises(InvalidReference):
        parse(text)
