"""Go values as the templates see them: truth, type names, and how Go's fmt and
encoding/json print them (shortest floats, %-verbs, ``json``)."""

from __future__ import annotations

import re

from pbox import jsonio as _json

TYPE_CHECKING = False  # typing costs ~3 ms to import; Any is only an annotation
if TYPE_CHECKING:
    from typing import Any


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()  # Go's invalid reflect.Value: what an absent map key yields
_NOFINAL = object()  # no value piped into a command


class Struct(dict):
    """A row of a listing (docker's typed context, e.g. ``*formatter.ContainerContext``):
    a Go struct, so a field it lacks is an error, where a map's absent key is not."""

    __slots__ = ("gotype",)

    def __init__(self, data: dict, gotype: str):
        super().__init__(data)
        self.gotype = gotype


class _ExecError(Exception):
    pass


class _CallError(Exception):
    """Raised by a function; reported as ``error calling NAME: ...``."""


_GOTYPES = ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string"),
            (dict, "map[string]interface {}"), ((list, tuple), "[]interface {}"))  # fmt: skip


def _gotype(v: Any) -> str:
    """The Go type docker's data would have, for messages."""
    if v is None or v is NO_VALUE:
        return "<nil>"
    return next((name for typ, name in _GOTYPES if isinstance(v, typ)), type(v).__name__)


def _truth(v: Any) -> bool:
    if v is None or v is NO_VALUE:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _sort_key(k: Any) -> tuple:
    if isinstance(k, (int, float)):
        return (0, k)
    return (1, k) if isinstance(k, str) else (2, str(k))


def _shortest(a: float) -> tuple[str, int]:
    """Shortest round-trip digits of a > 0 and the decimal point: a = 0.DIGITS * 10**dp."""
    mant, _, exp = repr(a).partition("e")
    ip, _, fp = mant.partition(".")
    every = ip + fp
    digits = every.lstrip("0")
    return digits.rstrip("0"), len(ip) + int(exp or 0) - (len(every) - len(digits))


def _fixed(d: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * -dp + d
    return d + "0" * (dp - len(d)) if dp >= len(d) else d[:dp] + "." + d[dp:]


def _exp(d: str, dp: int, digits: int) -> str:
    """d[0].d[1:] e±XX: scientific notation, the exponent at least `digits` long."""
    mant = d[0] + ("." + d[1:] if len(d) > 1 else "")
    return f"{mant}e{'-' if dp < 1 else '+'}{abs(dp - 1):0{digits}d}"


def _float_g(a: float) -> str:
    """Go's %v for a float64 >= 0 (shortest digits, %e from 1e+06 and below 1e-04)."""
    if a == 0:
        return "0"
    d, dp = _shortest(a)
    return _fixed(d, dp) if -4 <= dp - 1 < 6 else _exp(d, dp, 2)


def _go_quote(s: str, quote: str = '"') -> str:
    out = [quote]
    for ch in s:
        o = ord(ch)
        if ch == quote or ch == "\\":
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    out.append(quote)
    return "".join(out)


def _fmt_int(v: int, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if verb == "c":
        return chr(v) if 0 <= v <= 0x10FFFF else "\ufffd"
    if verb == "q":
        return _go_quote(chr(v) if 0 <= v <= 0x10FFFF else "\ufffd", "'")
    if verb == "U":
        u = f"U+{v & 0xFFFFFFFFFFFFFFFF:04X}"
        return (
            u + " " + _go_quote(chr(v), "'")
            if "#" in flags and 0 <= v < 0x110000 and chr(v).isprintable()
            else u
        )
    digits = format(abs(v), {"d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}[verb])
    sign = "-" if v < 0 else "+" if "+" in flags else " " if " " in flags else ""
    if prec is not None:
        digits = "" if prec == 0 and v == 0 else digits.zfill(prec)
    elif "0" in flags and "-" not in flags and width:
        digits = digits.zfill(width - len(sign))
    prefix = "0o" if verb == "O" else ""
    if "#" in flags:
        prefix = {"b": "0b", "x": "0x", "X": "0X", "o": "" if digits[:1] == "0" else "0"}.get(
            verb, prefix
        )
    return sign + prefix + digits


def _fmt_float(v: float, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        return "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
    sign = "-" if repr(v)[0] == "-" else "+" if "+" in flags else " " if " " in flags else ""
    flags = flags.replace("#", "") if verb == "v" else flags
    if verb in "gG" and "#" in flags and prec is None:
        prec = 6  # Go's %#g keeps six significant digits and their zeros
    if verb in "vgG" and prec is None:
        body = _float_g(abs(v))
        body = body.upper() if verb == "G" else body
    else:
        spec = "%" + ("#" if "#" in flags else "") + f".{6 if prec is None else prec}"
        body = (spec + {"v": "g", "F": "f"}.get(verb, verb)) % abs(v)
    if "0" in flags and "-" not in flags and width:
        body = body.zfill(width - len(sign))
    return sign + body


_VERBS = {bool: "tv", int: "vdboOxXcqU", float: "veEfFgG", str: "vsqxX"}


def _fmt_one(a: Any, verb: str, flags: str = "", width: int | None = None,
             prec: int | None = None, nested: bool = False) -> str:  # fmt: skip
    """Go's fmt for one operand and verb: lists and maps apply the verb to each element."""
    if verb != "T" and isinstance(a, (list, tuple, dict)):

        def one(x: Any) -> str:
            return _fmt_one(x, verb, flags, width, prec, True)

        if isinstance(a, dict):
            return (
                "map[" + " ".join(one(k) + ":" + one(a[k]) for k in sorted(a, key=_sort_key)) + "]"
            )
        return "[" + " ".join(map(one, a)) + "]"
    kind = (
        bool
        if isinstance(a, bool)
        else next((t for t in (int, float, str) if isinstance(a, t)), None)
    )
    if verb == "T":
        s = _gotype(a)
    elif a is None or a is NO_VALUE:
        if verb != "v" and not nested:
            return f"%!{verb}(<nil>)"
        s = "<no value>" if a is NO_VALUE else "<nil>"
    elif kind is None:
        s = str(a)
    elif verb not in _VERBS[kind]:
        return f"%!{verb}({_gotype(a)}={_fmt_one(a, 'v', flags.replace('#', ''), width, prec)})"
    elif kind is bool:
        s = "true" if a else "false"
    elif kind is int:
        s = _fmt_int(a, "d" if verb == "v" else verb, flags, width, prec)
    elif kind is float:
        s = _fmt_float(a, verb, flags, width, prec)
    elif verb in "xX":
        data = a.encode()[:prec] if prec is not None else a.encode()
        s = ("0x" if "#" in flags else "") + data.hex()
        s = s.upper() if verb == "X" else s
    else:
        s = a[:prec] if prec is not None else a
        s = _go_quote(s) if verb == "q" or (verb == "v" and "#" in flags) else s
    if width and len(s) < width:
        s = s.ljust(width) if "-" in flags else s.rjust(width)
    return s


def _fmt_v(v: Any) -> str:
    return _fmt_one(v, "v")


_VERB_RE = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.?)", re.S)


def _sprintf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    pos = ai = 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width_s, prec_s, verb = m.groups()
        nums: list[int | None] = []
        for spec, bad in ((width_s, "%!(BADWIDTH)"), (prec_s, "%!(BADPREC)")):
            if spec == "*":
                arg = args[ai] if ai < len(args) else None
                ai += 1
                ok = isinstance(arg, int) and not isinstance(arg, bool)
                if not ok:
                    out.append(bad)
                nums.append(arg if ok else None)
            else:
                nums.append(int(spec) if spec else (0 if spec == "" else None))
        width, prec = nums
        if width is not None and width < 0:
            flags, width = flags + "-", -width
        if not verb:
            out.append("%!(NOVERB)")
        elif verb == "%":
            out.append("%")
        elif ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:  # %+v and %#v are their own forms, not the sign flags
            out.append(
                _fmt_one(
                    args[ai], verb, flags.replace("+", "") if verb == "v" else flags, width, prec
                )
            )
            ai += 1
    out.append(fmt[pos:])
    if ai < len(args):
        extra = (f"{_gotype(a)}={_fmt_v(a)}" if a is not None else "<nil>" for a in args[ai:])
        out.append("%!(EXTRA " + ", ".join(extra) + ")")
    return "".join(out)


def _json_float(f: float) -> str:
    if f != f or f in (float("inf"), float("-inf")):
        raise _CallError(f"json: unsupported value: {_fmt_v(f)}")
    if f == 0:
        return "-0" if repr(f)[0] == "-" else "0"
    d, dp = _shortest(abs(f))
    sign = "-" if f < 0 else ""
    return sign + (_fixed(d, dp) if 1e-6 <= abs(f) < 1e21 else _exp(d, dp, 1))


def _json_enc(v: Any) -> str:
    """Compact JSON as Go's encoder writes it: keys in the dict's order, Go's floats."""
    if v is None or v is NO_VALUE:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, dict):
        return "{" + ",".join(_json_str(str(k)) + ":" + _json_enc(x) for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(_json_enc, v)) + "]"
    return _json_str(str(v))


def _json_str(s: str) -> str:
    # docker's encoder has SetEscapeHTML(false): <, > and & stay; U+2028/9 are always escaped
    return (
        _json.dumps(s, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def _to_json(v: Any) -> str:
    try:
        return _json_enc(v)
    except _CallError:
        return ""  # docker ignores the encoder's error and prints nothing
