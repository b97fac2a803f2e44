"""pbox.oci.urls against urllib.parse, on the URLs a registry client meets."""

from __future__ import annotations

import random
import urllib.parse

import pytest

from pbox.oci import urls

SCHEMES = ["http", "https", "HTTPS", ""]
NETLOCS = ["127.0.0.1:5000", "registry.example", "Reg.Example:443", "[::1]:5000", "[fe80::1]",
           "user:pa%20ss@host:8080", "user@host", "h:0", "h:65535", "h:"]
PATHS = ["", "/", "/v2/", "/v2/library/busybox/manifests/latest", "/v2/a/b/blobs/uploads/",
         "v2/rel", "../up", "./here", "/a/../b/./c", "/x//y", "/v2/r/blobs/sha256:ab",
         "/%7Euser/é", "/a b", ".", ".."]
QUERIES = ["", "?", "?_state=abc%2Bdef&digest=sha256%3Aab", "?a=1&a=2", "?x", "?a=b=c",
           "?sig=AbC&X-Amz-Signature=1", "?q=a+b", "?=v&k="]
FRAGMENTS = ["", "#", "#frag"]


def _urls(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        scheme = rng.choice(SCHEMES)
        netloc = rng.choice(NETLOCS + [""])
        head = (scheme + ":" if scheme else "") + ("//" + netloc if netloc or rng.random() < .1
                                                   else "")
        path = rng.choice(PATHS)
        if netloc and path[:1] not in ("", "/"):
            path = "/" + path  # (else it would be part of the host)
        yield head + path + rng.choice(QUERIES) + rng.choice(FRAGMENTS)


def test_split_matches_urlsplit():
    for url in _urls(5000, seed=1):
        want = urllib.parse.urlsplit(url)
        got = urls.split(url)
        assert (got.scheme, got.netloc, got.path, got.query, got.fragment) == tuple(want), url
        assert got.hostname == want.hostname, url
        assert got.username == want.username and got.password == want.password, url
        try:
            port = want.port
        except ValueError:
            with pytest.raises(ValueError):
                got.port  # noqa: B018
        else:
            assert got.port == port, url
        assert urls.unsplit((got.scheme, got.netloc, got.path, got.query, got.fragment)) == \
            urllib.parse.urlunsplit(want), url


def test_split_strips_what_urlsplit_strips():
    for url in [" \x00http://h/p", "http://h/p\tq\r\n", "\x1fhttps://h"]:
        got = urls.split(url)
        assert (got.scheme, got.netloc, got.path, got.query, got.fragment) == \
            tuple(urllib.parse.urlsplit(url))


def test_bad_brackets_refused():
    for url in ["http://[::1/x", "http://::1]/x", "http://a[::1]/x", "http://[::1]x/",
                "http://[example]/x"]:
        with pytest.raises(ValueError):
            urllib.parse.urlsplit(url)
        with pytest.raises(ValueError):
            urls.split(url)


def test_join_matches_urljoin():
    bases = [u for u in _urls(300, seed=2) if u]
    refs = list(_urls(300, seed=3))
    rng = random.Random(4)
    for _ in range(20000):
        base, ref = rng.choice(bases), rng.choice(refs)
        assert urls.join(base, ref) == urllib.parse.urljoin(base, ref), (base, ref)
    assert urls.join("", "x") == "x" and urls.join("http://h/a", "") == "http://h/a"


def test_quote_encode_unquote():
    rng = random.Random(5)
    alphabet = "aZ09_.-~ /:@?&=+%é\x00#"
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert urls.quote(s) == urllib.parse.quote(s), s
        assert urls.quote(s, safe=":@") == urllib.parse.quote(s, safe=":@"), s
        assert urls.quote_plus(s) == urllib.parse.quote_plus(s), s
        assert urls.unquote(s) == urllib.parse.unquote(s), s
        assert urls.unquote_to_bytes(s) == urllib.parse.unquote_to_bytes(s), s
        pairs = [(s, s[::-1]), ("k", s)]
        assert urls.encode(pairs) == urllib.parse.urlencode(pairs), s
        assert urls.encode(dict(pairs)) == urllib.parse.urlencode(dict(pairs)), s
        assert urls.parse_pairs(s) == urllib.parse.parse_qsl(s, keep_blank_values=True), s
