"""A Dockerfile parser that follows BuildKit's rules, and docker's variable substitution.

Pure: text in, objects out.  ``parse`` does the line handling of BuildKit's
``frontend/dockerfile/parser`` (directives, continuations, comments inside continuations,
heredocs, leading ``--flags``) and the per-instruction argument checks of its
``instructions`` package, so every mistake is reported with its line.  ``expand`` and
``expand_words`` run docker's shell-word lexer (``shellwords``).

Variables are *not* expanded at parse time: the builder expands the arguments of the
instructions in ``EXPANDING`` with the environment of the stage as it is at that
instruction (ARG and ENV values seen so far).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from pbox import jsonio as _json
from pbox.build.shellwords import Lexer as _Lexer
from pbox.build.shellwords import LexError as _LexError
from pbox.errors import PboxError

# Instructions whose arguments the builder expands (BuildKit's instructions implementing
# the expansion; FROM with the meta ARGs only).  RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK,
# MAINTAINER and ONBUILD are kept as written (the shell in the container expands RUN).
EXPANDING = frozenset(
    {"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
)

INSTRUCTIONS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
        "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
        "WORKDIR",
    }
)

# Flags each instruction accepts: name -> kind ("string", "strings" = repeatable, "bool").
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "string"},
    "RUN": {"mount": "strings", "network": "string", "security": "string", "device": "strings"},
    "COPY": {
        "from": "string", "chown": "string", "chmod": "string", "link": "bool",
        "parents": "bool", "exclude": "strings",
    },
    "ADD": {
        "chown": "string", "chmod": "string", "link": "bool", "checksum": "string",
        "keep-git-dir": "bool", "exclude": "strings", "unpack": "bool",
    },
    "HEALTHCHECK": {
        "interval": "string", "timeout": "string", "start-period": "string",
        "start-interval": "string", "retries": "string",
    },
}

_HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = frozenset({"escape", "syntax", "check"})
_WHITESPACE_RE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


class DockerfileError(PboxError):
    """A Dockerfile mistake; the message is ``Dockerfile:LINE: problem``."""

    def __init__(self, problem: str, line: int | None = None):
        self.problem = problem
        self.line = line
        where = f"Dockerfile:{line}" if line else "Dockerfile"
        super().__init__(f"{where}: {problem}")


class Heredoc(NamedTuple):
    name: str
    content: str  # tabs already stripped for ``<<-``
    expand: bool  # False when any part of the delimiter word was quoted
    chomp: bool  # ``<<-``
    fd: int  # ``3<<EOF`` -> 3; 0 when no descriptor was written


@dataclass
class Instruction:
    """One instruction.

    ``args`` by kind: exec/JSON form -> the JSON list (``json`` True); RUN/CMD/ENTRYPOINT
    shell form -> ``[rest of the line]``; ADD/COPY/VOLUME/EXPOSE/FROM -> whitespace-split
    words (raw); MAINTAINER/USER/WORKDIR/STOPSIGNAL -> ``[rest of the line]``;
    ENV/LABEL -> ``[key1, value1, key2, value2, ...]`` raw (use ``key_values``);
    ARG -> raw words ``name`` / ``name=default`` (use ``key_values``);
    HEALTHCHECK -> ``["NONE"]`` or ``["CMD", *command]`` (``json`` for the command's form);
    ONBUILD -> ``[inner text]`` and the parsed inner instruction in ``onbuild``.
    """

    cmd: str
    args: list[str]
    json: bool
    flags: list[tuple[str, str]]
    original: str
    line: int
    heredocs: list[tuple[str, str]] = field(default_factory=list)
    heredoc_expand: bool = True  # every heredoc of the instruction has an unquoted delimiter
    heredoc_info: list[Heredoc] = field(default_factory=list)
    onbuild: Optional[Instruction] = None
    end_line: int = 0
    escape: str = "\\"

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The last value given for ``--name`` (bool flags without value read "true")."""
        value = default
        for key, val in self.flags:
            if key == name:
                value = val
        return value

    def flag_all(self, name: str) -> list[str]:
        return [val for key, val in self.flags if key == name]


@dataclass
class Stage:
    index: int
    name: Optional[str]
    base: str
    platform: Optional[str]
    instructions: list[Instruction]
    from_instruction: Instruction


@dataclass
class Dockerfile:
    meta_args: list[Instruction]
    stages: list[Stage]
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)

    def stage(self, name_or_index: str) -> Stage:
        key = str(name_or_index).lower()
        for st in self.stages:
            if st.name == key:
                return st
        if key.isdigit() and int(key) < len(self.stages):
            return self.stages[int(key)]
        raise DockerfileError(f"build stage {name_or_index!r} not found")


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """Docker's substitution for one word: variables expanded, quotes and escapes removed.

    Whitespace is kept (``ENV a="x y"`` -> ``x y``).  Raises DockerfileError (without a
    line; re-raise with ``DockerfileError(e.problem, inst.line)``) for a bad substitution
    or a failed ``${VAR:?message}``.
    """
    try:
        return _Lexer(word, env, escape).process()[0]
    except _LexError as e:
        raise DockerfileError(str(e))


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Split ``text`` into words (unquoted whitespace separates, also inside variable
    values), processing quotes and expanding variables in each."""
    try:
        return _Lexer(text, env, escape).process()[1]
    except _LexError as e:
        raise DockerfileError(str(e))


def key_values(
    inst: Instruction, env: Mapping[str, str], *, escape: str | None = None
) -> list[tuple[str, Optional[str]]]:
    """The pairs of an ENV, LABEL or ARG instruction, expanded with ``env``.

    ENV/LABEL: keys and values expanded (each against ``env`` as it was before the
    instruction, as docker does: ``ENV a=1 b=$a`` sees the old ``a``).  ARG: names as
    written, defaults expanded; the value is None when there is no default.
    """
    esc = inst.escape if escape is None else escape
    try:
        if inst.cmd == "ARG":
            out: list[tuple[str, Optional[str]]] = []
            for word in inst.args:
                if "=" in word:
                    name, value = word.split("=", 1)
                    out.append((name, expand(value, env, escape=esc)))
                else:
                    out.append((word, None))
            return out
        if inst.cmd in ("ENV", "LABEL"):
            pairs = inst.args
            return [
                (expand(pairs[i], env, escape=esc), expand(pairs[i + 1], env, escape=esc))
                for i in range(0, len(pairs) - 1, 2)
            ]
    except DockerfileError as e:
        raise DockerfileError(e.problem, inst.line)
    raise ValueError(f"key_values: not an ENV, LABEL or ARG instruction: {inst.cmd}")


def parse_duration(text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds; ValueError if malformed."""
    if text in ("0", ""):
        return 0
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return int(total)


# ---------------------------------------------------------------------------
# line-level parsing


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """(line without the trailing escape, True when the instruction ends on this line)."""
    stripped = line.rstrip(" \t")
    if stripped.endswith(escape):
        return stripped[: -len(escape)], False
    return line, True


def _extract_flags(rest: str) -> tuple[list[str], str]:
    """Leading ``--flag[=value]`` words (quotes and backslashes processed) and the rest."""
    words: list[str] = []
    pos = 0
    n = len(rest)
    while True:
        while pos < n and rest[pos].isspace():
            pos += 1
        if pos >= n:
            return words, ""
        if not rest.startswith("--", pos):
            return words, rest[pos:]
        word = ""
        blank_ok = False
        quote = None
        while pos < n:
            ch = rest[pos]
            if quote is None:
                if ch.isspace():
                    break
                if ch in "'\"":
                    quote = ch
                    blank_ok = True
                    pos += 1
                    continue
            elif ch == quote:
                quote = None
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
        if word == "--":
            return words, rest[pos:]
        if blank_ok or word:
            words.append(word)


def _parse_flags(cmd: str, words: list[str], line: int) -> list[tuple[str, str]]:
    allowed = _FLAGS.get(cmd, {})
    used: set[str] = set()
    flags = []
    for word in words:
        arg = word[2:]
        name, eq, value = arg.partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise DockerfileError(f"unknown flag: {name} (for {cmd})", line)
        if name in used and kind != "strings":
            raise DockerfileError(f"duplicate flag specified: {name}", line)
        used.add(name)
        if kind == "bool":
            if eq and value == "":
                raise DockerfileError(f"missing a value on flag: {name}", line)
            lower = value.lower() if eq else "true"
            if lower not in ("true", "false"):
                raise DockerfileError(
                    f"expecting boolean value for flag {name}, not: {value}", line
                )
            value = lower
        elif not eq:
            raise DockerfileError(f"missing a value on flag: {name}", line)
        flags.append((name, value))
    return flags


class _NotStringArray(Exception):
    pass


def _parse_json(rest: str) -> list[str] | None:
    """The JSON array of strings, None when ``rest`` is not JSON at all."""
    if not rest.startswith("["):
        return None
    try:
        value = _json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _NotStringArray()
    return value


def _maybe_json(rest: str, line: int) -> tuple[list[str], bool]:
    rest = rest.strip()
    if not rest:
        return [], False
    try:
        value = _parse_json(rest)
    except _NotStringArray:
        raise DockerfileError("not a JSON array of strings", line)
    if value is not None:
        return value, True
    return [rest], False


def _maybe_json_to_list(rest: str, line: int) -> tuple[list[str], bool]:
    rest = rest.strip()
    try:
        value = _parse_json(rest)
    except _NotStringArray:
        raise DockerfileError("not a JSON array of strings", line)
    if value is not None:
        return value, True
    return _split_ws(rest), False


def _split_ws(rest: str) -> list[str]:
    return [w for w in _WHITESPACE_RE.split(rest.strip()) if w]


def _parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's parseWords: split on whitespace outside quotes, keeping quotes and escapes."""
    words: list[str] = []
    word = ""
    blank_ok = False
    quote = None
    in_word = False
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote is None:
            if ch.isspace():
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                in_word = False
                i += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
        else:
            if ch == quote:
                quote = None
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _parse_name_val(cmd: str, rest: str, escape: str, line: int) -> list[str]:
    words = _parse_words(rest, escape)
    if not words:
        raise DockerfileError(f"{cmd} requires at least one argument", line)
    if "=" not in words[0]:
        # legacy form: KEY value with spaces
        parts = _WHITESPACE_RE.split(rest.strip(), 1)
        if len(parts) < 2 or not parts[1]:
            raise DockerfileError(f"{cmd} must have two arguments", line)
        return [parts[0], parts[1]]
    out = []
    for word in words:
        if "=" not in word:
            raise DockerfileError(
                f"syntax error - can't find = in {word!r}. Must be of the form: name=value",
                line,
            )
        key, _, value = word.partition("=")
        if not key:
            raise DockerfileError(f"{cmd} names can not be blank", line)
        out += [key, value]
    return out


def _parse_healthcheck(rest: str, line: int) -> tuple[list[str], bool]:
    rest = rest.strip()
    if not rest:
        raise DockerfileError("HEALTHCHECK requires at least one argument", line)
    parts = _WHITESPACE_RE.split(rest, 1)
    typ = parts[0].upper()
    more = parts[1] if len(parts) > 1 else ""
    if typ == "NONE":
        if more.strip():
            raise DockerfileError("HEALTHCHECK NONE takes no arguments", line)
        return ["NONE"], False
    if typ != "CMD":
        raise DockerfileError(f"unknown type {parts[0]!r} in HEALTHCHECK (try CMD)", line)
    args, is_json = _maybe_json(more, line)
    if not args:
        raise DockerfileError("missing command after HEALTHCHECK CMD", line)
    return ["CMD", *args], is_json


def _check_healthcheck_flags(flags: list[tuple[str, str]], line: int) -> None:
    for name, value in flags:
        if name == "retries":
            try:
                retries = int(value)
            except ValueError:
                raise DockerfileError(f"invalid value for --retries: {value!r}", line)
            if retries < 0:
                raise DockerfileError("--retries cannot be negative", line)
            continue
        try:
            ns = parse_duration(value)
        except ValueError:
            raise DockerfileError(f"invalid duration for --{name}: {value!r}", line)
        if 0 < ns < 1_000_000:
            raise DockerfileError(f"--{name} cannot be less than 1ms", line)


def _parse_instruction(text: str, line: int, escape: str) -> Instruction:
    stripped = text.strip()
    parts = _WHITESPACE_RE.split(stripped, 1)
    keyword = parts[0]
    cmd = keyword.upper()
    rest = parts[1] if len(parts) > 1 else ""
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction: {keyword}", line)
    flag_words, rest = _extract_flags(rest)
    flags = _parse_flags(cmd, flag_words, line)
    is_json = False
    onbuild = None

    if cmd in ("RUN", "CMD", "ENTRYPOINT"):
        args, is_json = _maybe_json(rest, line)
        if cmd == "RUN" and not args:
            raise DockerfileError("RUN requires at least one argument", line)
    elif cmd == "SHELL":
        args, is_json = _maybe_json(rest, line)
        if not is_json:
            raise DockerfileError("SHELL requires the arguments to be in JSON form", line)
        if not args:
            raise DockerfileError("SHELL requires at least one argument", line)
    elif cmd in ("ADD", "COPY"):
        args, is_json = _maybe_json_to_list(rest, line)
        if len(args) < 2:
            raise DockerfileError(
                f"{cmd} requires at least two arguments, but only {len(args)} "
                "provided: source(s) and destination",
                line,
            )
    elif cmd == "VOLUME":
        args, is_json = _maybe_json_to_list(rest, line)
        if not args:
            raise DockerfileError("VOLUME requires at least one argument", line)
        if any(not a.strip() for a in args):
            raise DockerfileError("VOLUME specified can not be an empty string", line)
    elif cmd == "EXPOSE":
        args = _split_ws(rest)
        if not args:
            raise DockerfileError("EXPOSE requires at least one argument", line)
    elif cmd == "FROM":
        args = _split_ws(rest)
        if len(args) not in (1, 3):
            raise DockerfileError("FROM requires either one or three arguments", line)
        if len(args) == 3:
            if args[1].lower() != "as":
                raise DockerfileError(
                    f"FROM: expected 'AS' before the stage name, got {args[1]!r}", line
                )
            name = args[2].lower()
            if "$" not in name and not _STAGE_NAME_RE.match(name):
                raise DockerfileError(
                    f"invalid name for build stage: {args[2]!r}, name can't start with a "
                    "number or contain symbols",
                    line,
                )
    elif cmd in ("MAINTAINER", "USER", "WORKDIR", "STOPSIGNAL"):
        value = rest.strip()
        if not value:
            raise DockerfileError(f"{cmd} requires exactly one argument", line)
        args = [value]
    elif cmd in ("ENV", "LABEL"):
        args = _parse_name_val(cmd, rest, escape, line)
    elif cmd == "ARG":
        args = _parse_words(rest, escape)
        if not args:
            raise DockerfileError("ARG requires at least one argument", line)
        for word in args:
            if word.startswith("="):
                raise DockerfileError("ARG names can not be blank", line)
    elif cmd == "HEALTHCHECK":
        args, is_json = _parse_healthcheck(rest, line)
        _check_healthcheck_flags(flags, line)
    else:  # ONBUILD
        inner = rest.strip()
        if not inner:
            raise DockerfileError("ONBUILD requires at least one argument", line)
        onbuild = _parse_instruction(inner, line, escape)
        if onbuild.cmd == "ONBUILD":
            raise DockerfileError("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", line)
        if onbuild.cmd in ("FROM", "MAINTAINER"):
            raise DockerfileError(f"{onbuild.cmd} isn't allowed as an ONBUILD trigger", line)
        args = [inner]

    return Instruction(
        cmd=cmd,
        args=args,
        json=is_json,
        flags=flags,
        original=stripped,
        line=line,
        onbuild=onbuild,
        end_line=line,
        escape=escape,
    )


def _heredoc_starts(text: str) -> list[tuple[str, bool, bool, int]]:
    """(name, expand, chomp, fd) for each ``<<WORD`` of an instruction line, in order."""
    try:
        words = _Lexer(
            text, {}, "\\", raw_quotes=True, raw_escapes=True, skip_unset=True, heredoc_words=True
        ).process()[1]
    except _LexError:
        return []
    out = []
    for word in words:
        m = _HEREDOC_RE.match(word)
        if not m or not m.group(3):
            continue
        rest = m.group(3)
        try:
            cooked = _Lexer(rest, {}, "\\", skip_unset=True).process()[1]
            raw = _Lexer(rest, {}, "\\", skip_unset=True, raw_quotes=True).process()[1]
        except _LexError:
            continue
        if len(cooked) != 1 or len(raw) != 1:
            continue

        def quotes(s: str) -> int:
            return s.count("'") + s.count('"')

        out.append((cooked[0], quotes(cooked[0]) == quotes(raw[0]), m.group(2) == "-",
                    int(m.group(1) or 0)))
    return out


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile; DockerfileError names the line of the first mistake."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    escape = "\\"
    directives: dict[str, str] = {}
    directives_done = False
    instructions: list[Instruction] = []
    i = 0
    n = len(lines)
    while i < n:
        raw = lines[i]
        i += 1
        start = i
        current = raw.lstrip()
        if not directives_done:
            m = _DIRECTIVE_RE.match(current)
            name = m.group(1).lower() if m else ""
            if m and name in _KNOWN_DIRECTIVES:
                if name in directives:
                    raise DockerfileError(f"only one {name} parser directive can be used", start)
                value = m.group(2)
                if name == "escape":
                    if value not in ("\\", "`"):
                        raise DockerfileError(
                            f"invalid escape token {value!r} does not match ` or \\", start
                        )
                    escape = value
                directives[name] = value
                continue
            directives_done = True
        if current.startswith("#"):
            continue
        joined, complete = _trim_continuation(current, escape)
        if complete and not joined.strip():
            continue
        while not complete and i < n:
            raw = lines[i]
            i += 1
            if _is_comment(raw) or not raw.strip():
                continue  # comments and empty lines inside a continuation are dropped
            part, complete = _trim_continuation(raw, escape)
            joined += part
        if not joined.strip():
            continue
        inst = _parse_instruction(joined, start, escape)
        target = inst.onbuild if inst.cmd == "ONBUILD" else inst
        if target is not None and target.cmd in _HEREDOC_INSTRUCTIONS:
            for name, do_expand, chomp, fd in _heredoc_starts(joined):
                content = []
                terminated = False
                while i < n:
                    body = lines[i]
                    i += 1
                    candidate = body.lstrip("\t") if chomp else body
                    if candidate == name:
                        terminated = True
                        break
                    content.append((body.lstrip("\t") if chomp else body) + "\n")
                if not terminated:
                    raise DockerfileError(f"unterminated heredoc {name!r}", start)
                doc = Heredoc(name, "".join(content), do_expand, chomp, fd)
                target.heredoc_info.append(doc)
                target.heredocs.append((doc.name, doc.content))
            target.heredoc_expand = all(d.expand for d in target.heredoc_info)
        inst.end_line = i
        if inst.onbuild is not None:
            inst.onbuild.end_line = i
        instructions.append(inst)
    return _build(instructions, escape, directives)


def _build(
    instructions: list[Instruction], escape: str, directives: dict[str, str]
) -> Dockerfile:
    if not instructions:
        raise DockerfileError("file with no instructions")
    meta: list[Instruction] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for inst in instructions:
        if inst.cmd == "FROM":
            name = inst.args[2].lower() if len(inst.args) == 3 else None
            if name is not None:
                if name in names:
                    raise DockerfileError(f"duplicate stage name {name!r}", inst.line)
                names.add(name)
            stages.append(
                Stage(
                    index=len(stages),
                    name=name,
                    base=inst.args[0],
                    platform=inst.flag("platform"),
                    instructions=[],
                    from_instruction=inst,
                )
            )
        elif not stages:
            if inst.cmd != "ARG":
                raise DockerfileError(
                    f"{inst.cmd} before FROM: no build stage in current context", inst.line
                )
            meta.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise DockerfileError("no FROM instruction: no build stage in current context")
    return Dockerfile(meta_args=meta, stages=stages, escape=escape, directives=directives)
