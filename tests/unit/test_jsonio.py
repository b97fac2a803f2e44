"""pbox.jsonio gives what the json package gives, without importing it."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from pbox import jsonio

DOCS = [
    {}, [], "", 0, -1, 2**70, 1.5, -0.0, 1e300, True, False, None, "é\u2603\U0001f600\n\"\\",
    {"b": 1, "a": [1, 2, {"z": None, "y": "x"}], "c": {"": ""}},
    [float("inf"), float("-inf")], {"k" * 300: ["v"] * 50},
]


def _random_doc(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randrange(-10**20, 10**20)
    if kind == 2:
        return rng.uniform(-1e9, 1e9)
    if kind in (3, 4):
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.choice([rng.randrange(0, 0xD800), rng.randrange(0xE000, 0x2FFFF)])]))
                       for _ in range(rng.randrange(12)))
    if kind == 5:
        return [_random_doc(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(_random_doc(rng, 3)): _random_doc(rng, depth + 1) for _ in range(rng.randrange(5))}


@pytest.mark.parametrize("sort_keys", [False, True])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_dumps_and_loads_match_json(sort_keys, ensure_ascii):
    rng = random.Random(7)
    docs = DOCS + [_random_doc(rng) for _ in range(300)]
    for doc in docs:
        for separators in (None, (",", ":")):
            got = jsonio.dumps(doc, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                               separators=separators)
            assert got == json.dumps(doc, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                                     separators=separators)
            again = jsonio.loads(got)
            assert json.dumps(again) == json.dumps(json.loads(got))
            assert jsonio.loads(got.encode()) == json.loads(got.encode()) or doc != doc
    assert jsonio.dumps({"a": [1]}, indent=1) == json.dumps({"a": [1]}, indent=1)


@pytest.mark.parametrize("text", ["", " ", "{", "[1,]", "{} x", "nul", "\ufeff{}", "{'a': 1}",
                                  "1 2", '"\\x"', "[1] [2]"])
def test_what_is_not_json_raises_as_json_does(text):
    with pytest.raises(ValueError) as want:
        json.loads(text)
    with pytest.raises(ValueError) as got:
        jsonio.loads(text)
    assert str(got.value) == str(want.value)


def test_whitespace_around_a_document():
    assert jsonio.loads(' \n\t{"a": 1}\n \r') == {"a": 1}
    assert jsonio.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_unserializable_raises_type_error():
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonio.dumps({"a": object()})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jsonio.dumps(loop)


def test_imports_neither_json_nor_re():
    code = ("import sys; from pbox import jsonio; "
            "jsonio.loads(jsonio.dumps({'a': [1, 2.5, 'x']}, sort_keys=True)); "
            "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       cwd=__file__.rsplit("/tests/", 1)[0], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
