"""Docker's shell-word lexer (``shell/lex.go``): variables, quotes and the escape
character processed as the builder does, without running a shell.

``Lexer(text, env, escape).process()`` returns the processed text and its words;
``pbox.build.dockerfile.expand``/``expand_words`` are the public entry points.
"""

from __future__ import annotations

import re
from collections.abc import Mapping


class LexError(Exception):
    pass


class _Words:
    """Splits the lexer's output into words: whitespace from variables splits, quoted does not."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class Lexer:
    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset: bool = False,
        heredoc_words: bool = False,
    ):
        self.s = text
        self.i = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        # "<<" keeps the whitespace after it in the same word, so "<< EOF" is one word
        self.heredoc_words = heredoc_words

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def next(self) -> str | None:
        ch = self.peek()
        if ch is not None:
            self.i += 1
        return ch

    def getenv(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def process(
        self, stop: str | None = None, *, raw_escapes: bool = False
    ) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = saved or raw_escapes
        try:
            return self._process(stop)
        finally:
            self.raw_escapes = saved

    def _process(self, stop: str | None) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek() is not None:
            ch = self.peek()
            if stop is not None and ch == stop:
                self.next()
                return "".join(result), words.get()
            if ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "<" and self.heredoc_words and self.s.startswith("<<", self.i):
                j = self.i + 2
                while j < len(self.s) and self.s[j] in " \t":
                    j += 1
                tmp = self.s[self.i : j]
                self.i = j
                result.append(tmp)
                words.add_raw_string(tmp)
            else:
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch is None:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop is not None:
            raise LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def single_quote(self) -> str:
        out = []
        quote = self.next()
        if self.raw_quotes:
            out.append(quote)
        while True:
            ch = self.next()
            if ch is None:
                raise LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out = []
        quote = self.next()
        if self.raw_quotes:
            out.append(quote)
        while True:
            ch = self.peek()
            if ch is None:
                raise LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                nxt = self.peek()
                if nxt is None:
                    continue  # an escape at the very end is dropped
                if nxt in ('"', "$", self.escape):
                    if self.raw_escapes:
                        out.append(ch)
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out = []
        while self.peek() is not None:
            ch = self.peek()
            if not out and ch.isdigit():
                while self.peek() is not None and self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()  # $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.getenv(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()  # {
        ch = self.peek()
        if ch is None:
            raise LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.getenv(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch is None:
            raise LexError("syntax error: missing '}'")
        colon = ch == ":"
        modifier = self.next() if colon else ch
        if modifier is None:
            raise LexError("syntax error: missing '}'")
        if not colon and modifier in "#%":
            greedy = self.peek() == modifier
            if greedy:
                self.next()
            regex = self.glob_regex(self.word_until_brace(raw_escapes=True))
            value, found = self.getenv(name)
            if self.skip_unset and not found:
                return "${" + name + modifier * (1 + greedy) + "}"
            return self.trim(value, regex, prefix=modifier == "#", greedy=greedy)
        if not colon and modifier == "/":
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            try:
                pattern = self.process("/", raw_escapes=True)[0]
            except LexError:
                raise LexError("syntax error: missing '/' in ${}")
            replacement = self.word_until_brace(raw_escapes=True)
            value, found = self.getenv(name)
            if self.skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            regex = self.glob_regex(pattern)
            return regex.sub(lambda _m: replacement, value, count=0 if replace_all else 1)
        word = self.word_until_brace()
        value, found = self.getenv(name)
        if self.skip_unset and not found:
            return "${" + name + (":" if colon else "") + modifier + word + "}"
        if modifier == "-":
            if (colon and value == "") or (not colon and not found):
                return word
            return value
        if modifier == "+":
            if (colon and value != "") or (not colon and found):
                return word
            return ""
        if modifier == "?":
            if not found:
                raise LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if colon and value == "":
                raise LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        raise LexError(f"unsupported modifier ({modifier}) in substitution")

    def glob_regex(self, pattern: str) -> re.Pattern:
        """A shell pattern (``*``, ``?``, escapes) of ``${VAR#...}`` and friends as a regex."""
        out = []
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            i += 1
            if ch == self.escape and i < len(pattern):
                out.append(re.escape(pattern[i]))
                i += 1
            elif ch == "*":
                out.append(".*")
            elif ch == "?":
                out.append(".")
            else:
                out.append(re.escape(ch))
        return re.compile("".join(out), re.DOTALL)

    @staticmethod
    def trim(value: str, regex: re.Pattern, *, prefix: bool, greedy: bool) -> str:
        n = len(value)
        if prefix:
            cuts = range(n, -1, -1) if greedy else range(n + 1)
            for i in cuts:
                if regex.fullmatch(value[:i]):
                    return value[i:]
        else:
            cuts = range(n + 1) if greedy else range(n, -1, -1)
            for i in cuts:
                if regex.fullmatch(value[i:]):
                    return value[:i]
        return value

    def word_until_brace(self, *, raw_escapes: bool = False) -> str:
        try:
            word, _ = self.process("}", raw_escapes=raw_escapes)
        except LexError:
            if self.peek() is None:
                raise LexError("syntax error: missing '}'")
            raise
        return word
