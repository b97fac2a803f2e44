"""Go's text/template, the part docker's ``--format`` uses, in pure Python.

A lexer turns the text into tokens, a parser builds a small node tree (text, actions,
if/with/range), and an evaluator walks it over plain Python data (dicts, lists, str,
int, float, bool, None).  Dicts play Go's structs and maps: ``.Key`` looks a key up;
an absent key is Go's invalid value and prints ``<no value>``, while ``None`` plays a
nil pointer or slice and prints ``<nil>`` (as docker's typed data does).

On top sit docker's helpers: its extra functions (json, split, join, title, lower, upper,
pad, truncate), the ``table`` directive with headers aligned by a tabwriter configured
as docker configures it, the literal ``\\t``/``\\n`` escapes, and the ``json`` format.
Every mistake in a user's template raises UsageError, worded as docker words it.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Iterable
from typing import Any

from pbox.errors import UsageError

__all__ = ["NO_VALUE", "Template", "default_header", "format_rows", "render", "tabwrite"]


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()  # Go's invalid reflect.Value: what an absent map key yields
_NOFINAL = object()  # no value piped into a command


class _ParseError(Exception):
    def __init__(self, msg: str, pos: int):
        super().__init__(msg)
        self.pos = pos


class _ExecError(Exception):
    pass


class _CallError(Exception):
    """Raised by a function; reported as ``error calling NAME: ...``."""


class _BreakLoop(Exception):
    pass


class _ContinueLoop(Exception):
    pass


# ---------------------------------------------------------------------------- lexer

_SPACE = " \t\r\n"
_TOKEN_RE = re.compile(
    r"""(?P<space>[ \t\r\n]+)
    |(?P<str>"(?:[^"\\\n]|\\.)*")
    |(?P<raw>`[^`]*`)
    |(?P<char>'(?:[^'\\\n]|\\.)*')
    |(?P<num>[+-]?\.?\d(?:[eEpP][+-]|[\w.])*)
    |(?P<field>\.[^\W\d]\w*)
    |(?P<dot>\.)
    |(?P<var>\$\w*)
    |(?P<ident>[^\W\d]\w*)
    |(?P<op>:=|[=|(),])""",
    re.X,
)
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template",
             "block"}  # fmt: skip


class _Tok:
    __slots__ = ("kind", "value", "pos", "end", "spaced")

    def __init__(self, kind: str, value: Any, pos: int, end: int, spaced: bool = True):
        self.kind, self.value, self.pos, self.end, self.spaced = kind, value, pos, end, spaced

    def __str__(self) -> str:
        if self.kind in ("{{", "}}", "eof"):
            return {"eof": "EOF"}.get(self.kind, f'"{self.kind}"')
        return f"<{self.value}>" if self.kind in ("ident", "field", "var") else f'"{self.value}"'


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, n, trim_next = 0, len(text), False
    while pos < n:
        start = text.find("{{", pos)
        if start < 0:
            start = n
        chunk = text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(_SPACE)
        ltrim = text.startswith("{{-", start) and start + 3 < n and text[start + 3] in _SPACE
        if ltrim:
            chunk = chunk.rstrip(_SPACE)
        if chunk:
            toks.append(_Tok("text", chunk, pos, start))
        if start >= n:
            break
        p = start + (4 if ltrim else 2)
        if text.startswith("/*", p):  # a comment fills its whole action
            close = text.find("*/", p + 2)
            if close < 0:
                raise _ParseError("unclosed comment", start)
            p = close + 2
            if text.startswith("}}", p):
                pos, trim_next = p + 2, False
            elif p < n and text[p] in _SPACE and text.startswith("-}}", p + 1):
                pos, trim_next = p + 4, True
            else:
                raise _ParseError("comment ends before closing delimiter", start)
            continue
        toks.append(_Tok("{{", None, start, p))
        spaced = True
        while True:
            if p >= n:
                raise _ParseError("unclosed action", start)
            if text.startswith("}}", p):
                toks.append(_Tok("}}", None, p, p + 2))
                p, trim_next = p + 2, False
                break
            m = _TOKEN_RE.match(text, p)
            if m is None:
                ch = text[p]
                what = {'"': "quoted string", "`": "raw quoted string", "'": "character constant"}
                if ch in what:
                    raise _ParseError(f"unterminated {what[ch]}", p)
                if " " <= ch <= "~":
                    raise _ParseError(f'unexpected "{ch}" in operand', p)
                raise _ParseError(f"unrecognized character in action: U+{ord(ch):04X}", p)
            if m.lastgroup == "space":
                if text.startswith("-}}", m.end()):
                    toks.append(_Tok("}}", None, m.end(), m.end() + 3))
                    p, trim_next = m.end() + 3, True
                    break
                p, spaced = m.end(), True
                continue
            toks.append(_Tok(m.lastgroup, m.group(), p, m.end(), spaced))
            p, spaced = m.end(), False
        pos = p
    toks.append(_Tok("eof", None, n, n))
    return toks


_ESC_RE = re.compile(
    r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3})|(.))",
    re.S,
)
_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               "\\": "\\", "'": "'", '"': '"'}  # fmt: skip


def _unquote(tok: _Tok) -> str:
    quote, body = tok.value[0], tok.value[1:-1]
    if quote == "`":
        return body.replace("\r", "")

    def rep(m: re.Match) -> str:
        c, x, u, big, octal, bad = m.groups()
        if c is not None:
            if c in "'\"" and c != quote:
                raise _ParseError("invalid syntax", tok.pos)
            return _SIMPLE_ESC[c]
        if bad is not None:
            raise _ParseError("invalid syntax", tok.pos)
        cp = int(octal, 8) if octal else int(x or u or big, 16)
        if cp > 0x10FFFF or 0xD800 <= cp < 0xE000:
            raise _ParseError("invalid syntax", tok.pos)
        return chr(cp)

    return _ESC_RE.sub(rep, body)


def _number(tok: _Tok) -> int | float:
    t = tok.value.replace("_", "")
    neg = t[0] == "-"
    body = t.lstrip("+-")
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO]?[0-7]+|\d+", body):
            base = {"x": 16, "b": 2, "o": 8}.get(body[1:2].lower(), 8 if body[0] == "0" else 10)
            digits = body[2:] if body[1:2].lower() in ("x", "b", "o") else body
            v: int | float = int(digits, base)
        elif body[:2].lower() == "0x":
            v = float.fromhex(body)
        elif re.fullmatch(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", body):
            v = float(body)
        else:
            raise ValueError
    except ValueError:
        raise _ParseError(f'bad number syntax: "{tok.value}"', tok.pos)
    return -v if neg else v


# ---------------------------------------------------------------------------- parser


class _Op:
    """An operand: kind is field, dot, var, func, const, nil or pipe; names chain fields."""

    __slots__ = ("kind", "value", "names", "pos", "src")

    def __init__(self, kind: str, value: Any, pos: int, src: str):
        self.kind, self.value, self.names, self.pos, self.src = kind, value, [], pos, src


class _Cmd:
    __slots__ = ("ops", "pos", "src")

    def __init__(self, ops: list[_Op], pos: int):
        self.ops, self.pos, self.src = ops, pos, " ".join(o.src for o in ops)


class _Pipe:
    __slots__ = ("decl", "is_assign", "cmds")

    def __init__(self, decl: list[str], is_assign: bool, cmds: list[_Cmd]):
        self.decl, self.is_assign, self.cmds = decl, is_assign, cmds


class _Control:
    __slots__ = ("kind", "pipe", "body", "else_body")

    def __init__(self, kind: str, pipe: _Pipe, body: list, else_body: list | None):
        self.kind, self.pipe, self.body, self.else_body = kind, pipe, body, else_body


class _Jump:
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind


class _Parser:
    def __init__(self, text: str, funcs: dict):
        self.text, self.funcs = text, funcs
        self.toks, self.i = _lex(text), 0
        self.vars, self.range_depth = ["$"], 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def expect_close(self, context: str) -> None:
        tok = self.next()
        if tok.kind != "}}":
            raise _ParseError(f"unexpected {tok} in {context}", tok.pos)

    def parse(self) -> list:
        nodes, term = self.parse_list()
        if term.kind != "eof":
            raise _ParseError(f"unexpected {{{{{term.value}}}}}", term.pos)
        return nodes

    def parse_list(self) -> tuple[list, _Tok]:
        """Nodes up to {{else}}, {{end}} or EOF, which is returned (consumed)."""
        nodes: list = []
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return nodes, tok
            if tok.kind == "text":
                nodes.append(tok.value)
                continue
            kw = self.peek()
            word = kw.value if kw.kind == "ident" else None
            if word in ("else", "end"):
                return nodes, self.next()
            if word in ("if", "range", "with"):
                self.next()
                nodes.append(self.parse_control(word))
            elif word in ("break", "continue"):
                self.next()
                if not self.range_depth:
                    raise _ParseError(f"{{{{{word}}}}} outside {{{{range}}}}", kw.pos)
                self.expect_close(word)
                nodes.append(_Jump(word))
            else:
                nodes.append(self.parse_pipe("command", "}}"))

    def parse_control(self, kind: str) -> _Control:
        mark = len(self.vars)
        pipe = self.parse_pipe(kind, "}}")
        self.range_depth += kind == "range"
        body, term = self.parse_list()
        self.range_depth -= kind == "range"
        else_body = None
        if term.kind == "ident" and term.value == "else":
            nxt = self.peek()
            if kind != "range" and nxt.kind == "ident" and nxt.value == kind:
                self.next()  # {{else if}} / {{else with}}: the nested one eats the {{end}}
                else_body = [self.parse_control(kind)]
                del self.vars[mark:]
                return _Control(kind, pipe, body, else_body)
            self.expect_close("else")
            else_body, term = self.parse_list()
        if term.kind == "eof":
            raise _ParseError("unexpected EOF", term.pos)
        if term.value != "end":
            raise _ParseError(f"expected end; found {{{{{term.value}}}}}", term.pos)
        self.expect_close("end")
        del self.vars[mark:]
        return _Control(kind, pipe, body, else_body)

    def parse_pipe(self, context: str, end: str) -> _Pipe:
        decl: list[str] = []
        is_assign = False
        t = self.toks
        if end == "}}" and self.peek().kind == "var":
            i = self.i

            def declares(j: int) -> bool:
                return t[j].kind == "op" and t[j].value in (":=", "=")

            # the lexer guarantees "}}" and EOF after any token of an action
            if declares(i + 1):
                decl, is_assign, self.i = [t[i].value], t[i + 1].value == "=", i + 2
            elif t[i + 1].value == "," and t[i + 2].kind == "var" and declares(i + 3):
                if context != "range":
                    raise _ParseError(f"too many declarations in {context}", t[i].pos)
                decl, is_assign, self.i = [t[i].value, t[i + 2].value], t[i + 3].value == "=", i + 4
            for name in decl:
                self.check_var(name, t[i].pos) if is_assign else self.vars.append(name)
        cmds: list[_Cmd] = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                raise _ParseError("unclosed action", tok.pos)
            if not cmds and (tok.kind == "}}" or tok.value == ")"):
                raise _ParseError(f"missing value for {context}", tok.pos)
            cmds.append(self.parse_command())
            tok = self.next()
            if tok.kind == "op" and tok.value == "|":
                continue
            if (tok.kind == "}}") if end == "}}" else (tok.value == ")"):
                break
            if end == ")" and tok.kind == "}}":
                raise _ParseError("unclosed left paren", tok.pos)
            raise _ParseError(f"unexpected {tok} in {context}", tok.pos)
        for i, cmd in enumerate(cmds[1:]):
            if cmd.ops[0].kind in ("const", "dot", "nil"):
                raise _ParseError(f"non executable command in pipeline stage {i + 2}", cmd.pos)
        return _Pipe(decl, is_assign, cmds)

    def check_var(self, name: str, pos: int) -> None:
        if name not in self.vars:
            raise _ParseError(f'undefined variable "{name}"', pos)

    def parse_command(self) -> _Cmd:
        ops: list[_Op] = []
        pos = self.peek().pos
        while True:
            tok = self.peek()
            if tok.kind in ("}}", "eof") or (tok.kind == "op" and tok.value in "|)"):
                if not ops:
                    raise _ParseError("missing value for command", tok.pos)
                return _Cmd(ops, pos)
            if ops and not tok.spaced:
                raise _ParseError(f"unexpected {tok} in operand", tok.pos)
            ops.append(self.parse_operand())

    def parse_operand(self) -> _Op:
        tok = self.next()
        k, v = tok.kind, tok.value
        if k == "field":
            op = _Op("field", None, tok.pos, v)
            op.names.append(v[1:])
        elif k == "dot":
            op = _Op("dot", None, tok.pos, v)
        elif k == "var":
            self.check_var(v, tok.pos)
            op = _Op("var", v, tok.pos, v)
        elif k == "ident" and v in ("true", "false"):
            op = _Op("const", v == "true", tok.pos, v)
        elif k == "ident" and v == "nil":
            op = _Op("nil", None, tok.pos, v)
        elif k == "ident" and v not in _KEYWORDS:
            if v not in self.funcs:
                raise _ParseError(f'function "{v}" not defined', tok.pos)
            op = _Op("func", v, tok.pos, v)
        elif k in ("str", "raw"):
            op = _Op("const", _unquote(tok), tok.pos, v)
        elif k == "char":
            s = _unquote(tok)
            if len(s) != 1:
                raise _ParseError(f"malformed character constant: {v}", tok.pos)
            op = _Op("const", ord(s), tok.pos, v)
        elif k == "num":
            op = _Op("const", _number(tok), tok.pos, v)
        elif k == "op" and v == "(":
            pipe = self.parse_pipe("parenthesized pipeline", ")")
            op = _Op("pipe", pipe, tok.pos, self.text[tok.pos : self.toks[self.i - 1].end])
        else:
            raise _ParseError(f"unexpected {tok} in operand", tok.pos)
        while self.peek().kind == "field" and not self.peek().spaced:
            field = self.next()
            if op.kind in ("const", "nil", "func"):
                raise _ParseError(f'unexpected . after term "{op.src}"', field.pos)
            if len(op.names) < 1 + (op.kind == "field"):
                op.pos = field.pos  # Go places a chain at its first chained field
            op.names.append(field.value[1:])
            op.src += field.value
        return op


# ---------------------------------------------------------------------------- values


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


# ---------------------------------------------------------------------------- functions


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


# ---------------------------------------------------------------------------- evaluator


class _Headers(dict):
    """The data a table's header row is rendered from: any field path names its column."""

    def header(self, path: str) -> str:
        return self.get(path) or default_header(path)


class _Exec:
    def __init__(self, funcs: dict, root: Any):
        self.funcs, self.vars, self.at = funcs, [["$", root]], None

    def walk(self, nodes: list, dot: Any, out: list[str]) -> None:
        for node in nodes:
            if type(node) is str:
                out.append(node)
            elif type(node) is _Pipe:
                v = self.pipe(node, dot)
                if not node.decl:
                    out.append(_fmt_v(v))
            elif type(node) is _Control:
                mark = len(self.vars)
                try:
                    if node.kind == "range":
                        self.range(node, dot, out)
                    else:
                        v = self.pipe(node.pipe, dot)
                        if _truth(v):
                            self.walk(node.body, v if node.kind == "with" else dot, out)
                        elif node.else_body is not None:
                            self.walk(node.else_body, dot, out)
                finally:
                    del self.vars[mark:]
            else:
                raise _BreakLoop if node.kind == "break" else _ContinueLoop

    def range(self, node: _Control, dot: Any, out: list[str]) -> None:
        pipe = node.pipe
        v = self.pipe(pipe, dot)  # declares the variables (as Go does); each pass resets them
        if v is None or v is NO_VALUE:
            items: Iterable = []
        elif isinstance(v, dict):
            items = [(k, v[k]) for k in sorted(v, key=_sort_key)]
        elif isinstance(v, (list, tuple)):
            items = enumerate(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            items = ((i, i) for i in range(v))
        else:
            raise _ExecError(f"range can't iterate over {_fmt_v(v)}")
        mark, empty = len(self.vars), True
        for key, elem in items:
            empty = False
            values = [elem] if len(pipe.decl) == 1 else [key, elem]
            for name, val in zip(pipe.decl, values):
                self.assign(name, val)
            try:
                self.walk(node.body, elem, out)
            except _ContinueLoop:
                pass
            except _BreakLoop:
                break
            finally:
                del self.vars[mark:]
        if empty and node.else_body is not None:
            self.walk(node.else_body, dot, out)

    def assign(self, name: str, value: Any) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise _ExecError(f"undefined variable: {name}")

    def pipe(self, pipe: _Pipe, dot: Any) -> Any:
        v = _NOFINAL
        for cmd in pipe.cmds:
            v = self.command(cmd, dot, v)
        for name in pipe.decl:
            self.assign(name, v) if pipe.is_assign else self.vars.append([name, v])
        return v

    def command(self, cmd: _Cmd, dot: Any, final: Any) -> Any:
        first = cmd.ops[0]
        self.at = cmd
        if first.kind == "func":
            return self.call(first.value, cmd.ops[1:], dot, final, cmd)
        if len(cmd.ops) > 1 or final is not _NOFINAL:
            self.at = first
            if first.kind == "field":
                raise _ExecError(f"{first.names[-1]} is not a method but has arguments")
            raise _ExecError(f"can't give argument to non-function {first.src}")
        if first.kind == "nil":
            raise _ExecError("nil is not a command")
        return self.arg(first, dot)

    def arg(self, op: _Op, dot: Any) -> Any:
        k = op.kind
        if k == "const":
            return op.value
        if k == "nil":
            return NO_VALUE  # an untyped nil: passed to a function it becomes None
        if k == "func":
            return self.call(op.value, [], dot, _NOFINAL, op)
        if k == "var":
            v = next((var[1] for var in reversed(self.vars) if var[0] == op.value), _NOFINAL)
            if v is _NOFINAL:
                raise _ExecError(f"undefined variable: {op.value}")
        elif k == "pipe":
            v = self.pipe(op.value, dot)
        else:
            v = dot
        self.at = op
        return self.chain(v, op.names) if op.names else v

    def chain(self, v: Any, names: list[str]) -> Any:
        if isinstance(v, _Headers):
            return v.header(".".join(names))
        for name in names:
            if v is NO_VALUE:
                return v
            if v is None:
                raise _ExecError(f"nil pointer evaluating interface {{}}.{name}")
            if not isinstance(v, dict):
                raise _ExecError(f"can't evaluate field {name} in type {_gotype(v)}")
            v = v.get(name, NO_VALUE)
        return v

    def call(self, name: str, ops: list[_Op], dot: Any, final: Any, node: Any) -> Any:
        fn, least, most = self.funcs[name]
        self.at = node.ops[0] if isinstance(node, _Cmd) else node
        n = len(ops) + (final is not _NOFINAL)
        if n < least or (most is not None and n > most):
            want = f"at least {least}" if most is None else str(least)
            raise _ExecError(f"wrong number of args for {name}: want {want} got {n}")
        if fn is None:  # and / or: stop at the first value that decides
            v = None
            for op in ops:
                v = self.arg(op, dot)
                if _truth(v) == (name == "or"):
                    return v
            return final if final is not _NOFINAL else v
        args = [self.arg(op, dot) for op in ops]
        if final is not _NOFINAL:
            args.append(final)
        args = [None if a is NO_VALUE else a for a in args]  # an invalid value passes as nil
        self.at = node
        try:
            return fn(*args)
        except _CallError as e:
            raise _ExecError(f"error calling {name}: {e}")


# ---------------------------------------------------------------------------- public API


class Template:
    """A parsed template; execute() it as many times as there are rows."""

    __slots__ = ("text", "_nodes")

    def __init__(self, text: str):
        self.text = text
        try:
            self._nodes = _Parser(text, _FUNCS).parse()
        except _ParseError as e:
            line = text.count("\n", 0, e.pos) + 1
            raise UsageError(f"template parsing error: template: :{line}: {e}") from None
        except RecursionError:
            raise UsageError("template parsing error: template: :1: nested too deeply") from None

    def execute(self, data: Any) -> str:
        out: list[str] = []
        self._run(data, _FUNCS, out)
        return "".join(out)

    def _run(self, data: Any, funcs: dict, out: list[str]) -> None:
        ex = _Exec(funcs, data)
        try:
            ex.walk(self._nodes, data, out)
        except _ExecError as e:
            at = ex.at or _Op("dot", None, 0, ".")
            line = self.text.count("\n", 0, at.pos) + 1
            col = at.pos - (self.text.rfind("\n", 0, at.pos) + 1)
            raise UsageError(
                f'template parsing error: template: :{line}:{col}: executing "" at <{at.src}>: {e}'
            ) from None
        except RecursionError:
            raise UsageError("template parsing error: data nested too deeply") from None


def render(template: str, data: Any) -> str:
    """Parse and execute a template once (``inspect --format`` style: no escapes)."""
    return Template(template).execute(data)


def default_header(field: str) -> str:
    """``CreatedAt`` -> ``CREATED AT``, ``IPAddress`` -> ``IP ADDRESS``, ``State.Status`` -> ``STATE STATUS``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", field)
    return " ".join(words.replace(".", " ").replace("_", " ").split()).upper()


def format_rows(fmt: str, rows: Iterable[Any], headers: dict[str, str] | None = None, *,
                default: str | None = None) -> str:  # fmt: skip
    """Render rows the way docker's ``--format`` does; the result ends with a newline per row.

    ``json`` prints one compact JSON object per row; ``table ...`` prints a header row
    (``headers`` maps a field path such as ``ID`` to its title, default_header() names
    the rest) and aligns the columns; anything else is a template run once per row.
    The two-character escapes ``\\t`` and ``\\n`` a user types become a tab and a newline.
    ``default`` replaces an empty format or a bare ``table``.
    """
    if default is not None and fmt.strip() in ("", "table"):
        fmt = default
    is_table = fmt.startswith("table")
    body = "{{json .}}" if fmt == "json" else fmt[5:] if is_table else fmt
    body = body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    tpl = Template(body)
    out: list[str] = []
    for row in rows:
        tpl._run(row, _FUNCS, out)
        out.append("\n")
    if not is_table:
        return "".join(out)
    head: list[str] = []
    try:
        tpl._run(_Headers(headers or {}), _HEADER_FUNCS, head)
    except UsageError:
        pass  # docker prints whatever the header template produced before failing
    return _tabwriter("".join(head) + "\n" + "".join(out))


def _width(s: str) -> int:
    """Display width as docker's tabwriter measures it (go-runewidth): wide East Asian
    characters count two, combining marks none."""
    if s.isascii():
        return len(s)
    import unicodedata

    return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)  # fmt: skip


def _tabwriter(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter (padchar ' ', no flags) over a whole text.

    Cells are tab-terminated; the text after a line's last tab is not part of a column.
    A column is a run of adjacent lines that all have a cell at that index, and its
    width is the widest cell + padding, at least minwidth.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []

    def write(line0: int, line1: int, widths: list[int]) -> None:
        for i in range(line0, line1):
            cells = lines[i]
            for j, cell in enumerate(cells):
                out.append(cell)
                if j < len(widths) and j < len(cells) - 1:
                    out.append(" " * (widths[j] - _width(cell)))
            if i + 1 < len(lines):
                out.append("\n")

    def fmt(line0: int, line1: int, widths: list[int]) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(line0, this, widths)
            line0, width = this, minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, _width(lines[this][column]) + padding)
                this += 1
            fmt(line0, this, widths + [width])
            line0 = this
        write(line0, line1, widths)

    fmt(0, len(lines), [])
    return "".join(out)


def tabwrite(lines: Iterable[str], *, minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-separated lines as docker's tables are aligned; each line ends with a newline."""
    return _tabwriter("".join(line + "\n" for line in lines), minwidth, padding)
