"""The lexer and parser: template text to a small node tree (text, actions,
if/with/range, break/continue)."""

from __future__ import annotations

import re


class _ParseError(Exception):
    def __init__(self, msg: str, pos: int):
        super().__init__(msg)
        self.pos = pos


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

TYPE_CHECKING = False  # typing costs ~3 ms to import; Any is only an annotation
if TYPE_CHECKING:
    from typing import Any

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
