"""The template functions: Go's builtins (and, eq, index, len, printf, ...) and
docker's (json, split, join, title, lower, upper, pad, truncate)."""

from __future__ import annotations

from pbox.gotemplate.values import (
    NO_VALUE,
    _CallError,
    _ExecError,
    _fmt_v,
    _gotype,
    _sprintf,
    _to_json,
    _truth,
)

TYPE_CHECKING = False  # typing costs ~3 ms to import; Any is only an annotation
if TYPE_CHECKING:
    from typing import Any


def _want(v: Any, typ: type, name: str) -> Any:
    if v is None or v is NO_VALUE:
        raise _ExecError(f"invalid value; expected {name}")
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise _ExecError(f"wrong type for value; expected {name}; got {_gotype(v)}")
    return v


def _basic(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    return "str" if isinstance(v, str) else "other"


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _CallError("missing argument for comparison")
    for b in others:
        if a is None or a is NO_VALUE or b is None or b is NO_VALUE:
            if (a is None or a is NO_VALUE) and (b is None or b is NO_VALUE):
                return True
            continue
        ka, kb = _basic(a), _basic(b)
        if ka == "other" or kb == "other":
            raise _CallError(f"non-comparable type {_fmt_v(a if ka == 'other' else b)}: "
                             f"{_gotype(a if ka == 'other' else b)}")  # fmt: skip
        if ka != kb:
            raise _CallError("incompatible types for comparison")
        if a == b:
            return True
    return False


def _lt(a: Any, b: Any) -> bool:
    ka, kb = _basic(a), _basic(b)
    if ka not in ("num", "str") or kb not in ("num", "str"):
        raise _CallError("invalid type for comparison")
    if ka != kb:
        raise _CallError("incompatible types for comparison")
    return a < b


def _len(v: Any) -> int:
    if v is None or v is NO_VALUE:
        raise _CallError("len of nil pointer")
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, (list, tuple, dict)):
        return len(v)
    raise _CallError(f"len of type {_gotype(v)}")


def _int_index(x: Any, what: str) -> int:
    if x is None or x is NO_VALUE:
        raise _CallError(f"cannot index {what} with nil")
    if not isinstance(x, int) or isinstance(x, bool):
        raise _CallError(f"cannot index {what} with type {_gotype(x)}")
    return x


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if item is None or item is NO_VALUE:
            raise _CallError("index of untyped nil")
        if isinstance(item, (list, tuple, str)):
            i = _int_index(k, "slice/array")
            seq = item.encode() if isinstance(item, str) else item  # a Go string indexes bytes
            if not 0 <= i < len(seq):
                raise _CallError(f"index out of range: {i}")
            item = seq[i]
        elif isinstance(item, dict):
            if k is None or k is NO_VALUE or (item and not isinstance(k, type(next(iter(item))))):
                raise _CallError(f"value has type {_gotype(k)}; should be string")
            item = item[k] if k in item else _zero_like(item)
        else:
            raise _CallError(f"can't index item of type {_gotype(item)}")
    return item


_ZEROS = ((str, ""), (bool, False), (int, 0), (float, 0.0), ((list, tuple), []))


def _zero_like(d: dict) -> Any:
    """What Go's index gives for an absent key: the zero of the map's value type, guessed
    from the values present ("" for an empty map: docker's are mostly string maps, like labels)."""
    v = next((v for v in d.values() if v is not None), "")
    return next((zero for typ, zero in _ZEROS if isinstance(v, typ)), None)


def _slice(item: Any, *idx: Any) -> Any:
    if item is None or item is NO_VALUE:
        raise _CallError("slice of untyped nil")
    if not isinstance(item, (str, list, tuple)):
        raise _CallError(f"can't slice item of type {_gotype(item)}")
    if len(idx) > 3 or (len(idx) == 3 and isinstance(item, str)):
        raise _CallError(f"too many slice indexes: {len(idx)}")
    seq = item.encode() if isinstance(item, str) else item  # a Go string slices by bytes
    ints = [_int_index(x, "slice") for x in idx]
    for x in ints:
        if not 0 <= x <= len(seq):
            raise _CallError(f"index out of range: {x}")
    for a, b in zip(ints, ints[1:]):
        if a > b:
            raise _CallError(f"invalid slice index: {a} > {b}")
    part = seq[ints[0] if ints else 0 : ints[1] if len(ints) > 1 else len(seq)]
    return part.decode(errors="replace") if isinstance(part, bytes) else part


def _sprint(*args: Any) -> str:
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_fmt_v(a))
    return "".join(out)


def _title(s: str) -> str:
    out, prev = [], " "
    for ch in _want(s, str, "string"):
        sep = not (prev.isalnum() or prev == "_") if prev < "\x80" else prev.isspace()
        out.append(ch.upper() if sep and len(ch.upper()) == 1 else ch)
        prev = ch
    return "".join(out)


def _split(s: str, sep: str) -> list[str]:
    s, sep = _want(s, str, "string"), _want(sep, str, "string")
    return list(s) if sep == "" else s.split(sep)


def _join(items: Any, sep: str) -> str:
    items = [] if items is None else _want(items, (list, tuple), "[]string")
    return _want(sep, str, "string").join(x if isinstance(x, str) else _fmt_v(x) for x in items)


def _pad(s: str, prefix: int, suffix: int) -> str:
    s, prefix, suffix = (
        _want(s, str, "string"),
        _want(prefix, int, "int"),
        _want(suffix, int, "int"),
    )
    return s and " " * prefix + s + " " * suffix


def _truncate(s: str, n: int) -> str:
    return _want(s, str, "string")[: _want(n, int, "int")]


# name -> (function, least args, most args or None); and/or are evaluated lazily
_FUNCS: dict[str, tuple] = {
    "and": (None, 1, None), "or": (None, 1, None),
    "not": (lambda v: not _truth(v), 1, 1),
    "eq": (_eq, 1, None), "ne": (lambda a, b: not _eq(a, b), 2, 2),
    "lt": (_lt, 2, 2), "le": (lambda a, b: _lt(a, b) or _eq(a, b), 2, 2),
    "gt": (lambda a, b: not (_lt(a, b) or _eq(a, b)), 2, 2), "ge": (lambda a, b: not _lt(a, b), 2, 2),
    "len": (_len, 1, 1), "index": (_index, 1, None), "slice": (_slice, 1, None),
    "print": (_sprint, 0, None), "println": (lambda *a: " ".join(map(_fmt_v, a)) + "\n", 0, None),
    "printf": (lambda f, *a: _sprintf(_want(f, str, "string"), *a), 1, None),
    "json": (_to_json, 1, 1), "split": (_split, 2, 2), "join": (_join, 2, 2),
    "title": (_title, 1, 1), "lower": (lambda s: _want(s, str, "string").lower(), 1, 1),
    "upper": (lambda s: _want(s, str, "string").upper(), 1, 1),
    "pad": (_pad, 3, 3), "truncate": (_truncate, 2, 2),
}  # fmt: skip
# docker renders a table's header with these turned into no-ops, so a header stays a name
_HEADER_FUNCS = dict(_FUNCS)
for _name, _n in (("json", 1), ("split", 2), ("join", 2), ("title", 1), ("lower", 1), ("upper", 1),
                  ("truncate", 2)):  # fmt: skip
    _HEADER_FUNCS[_name] = (lambda v, *_: v, _n, _n)
