""".dockerignore matching with docker's rules (moby/patternmatcher).

Patterns are Go ``filepath.Match`` patterns (``*`` and ``?`` stop at ``/``, ``[...]``
classes, ``\\`` escapes) plus ``**`` for any number of directories.  A pattern matches a
path or any of its parent directories, so an excluded directory excludes its contents;
``!pattern`` re-includes, and the last matching pattern wins.  Paths are relative to the
context root, ``/``-separated.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from pbox.errors import PboxError


class DockerIgnoreError(PboxError):
    """A .dockerignore pattern that does not compile."""


@dataclass(frozen=True)
class _Pattern:
    text: str  # cleaned, without the "!"
    exclusion: bool
    regex: re.Pattern


def _clean(path: str) -> str:
    """Go's filepath.Clean for '/'-separated paths."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _compile(pattern: str) -> re.Pattern:
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" behaves as "**"
                if i >= n:
                    out.append(".*")
                else:
                    out.append("(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        elif ch == "[":
            # a character class, copied with Go's syntax ([^...], ranges, \ escapes)
            j = i
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                raise DockerIgnoreError(f"syntax error in pattern {pattern!r}")
            cls = ["["]
            if i < n and pattern[i] == "^":
                cls.append("^")
                i += 1
            closed = False
            while i < n:
                c = pattern[i]
                i += 1
                if c == "]":
                    closed = True
                    break
                if c == "\\":
                    if i >= n:
                        break
                    c = pattern[i]
                    i += 1
                    cls.append(re.escape(c))
                elif c == "-":
                    cls.append("-")
                elif c in "[&~|":
                    cls.append("\\" + c)
                else:
                    cls.append(c)
            if not closed:
                raise DockerIgnoreError(f"syntax error in pattern {pattern!r}")
            cls.append("]")
            out.append("".join(cls))
        else:
            out.append(re.escape(ch))
    out.append("$")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        raise DockerIgnoreError(f"syntax error in pattern {pattern!r}")


class DockerIgnore:
    def __init__(self, patterns: list[str] | None = None):
        self._patterns: list[_Pattern] = []
        for raw in patterns or []:
            self._add(raw)

    @classmethod
    def from_text(cls, text: str) -> DockerIgnore:
        """Read a .dockerignore file's text (docker's ReadAll)."""
        if text.startswith("\ufeff"):
            text = text[1:]
        patterns = []
        for line in text.split("\n"):
            if line.startswith("#"):
                continue
            pattern = line.strip()
            if not pattern:
                continue
            invert = pattern.startswith("!")
            if invert:
                pattern = pattern[1:].strip()
            if pattern:
                pattern = _clean(pattern)
                if len(pattern) > 1 and pattern.startswith("/"):
                    pattern = pattern[1:]
            patterns.append("!" + pattern if invert else pattern)
        return cls(patterns)

    def _add(self, raw: str) -> None:
        pattern = raw.strip()
        if not pattern:
            return
        exclusion = pattern.startswith("!")
        if exclusion:
            pattern = pattern[1:]
            if not pattern:
                raise DockerIgnoreError('illegal exclusion pattern: "!"')
        pattern = _clean(pattern)
        self._patterns.append(_Pattern(pattern, exclusion, _compile(pattern)))

    @property
    def patterns(self) -> list[str]:
        return [("!" if p.exclusion else "") + p.text for p in self._patterns]

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self._patterns)

    def matches(self, path: str) -> bool:
        """True when ``path`` (relative to the context) is ignored."""
        path = _clean(path.lstrip("/")) if path not in ("", ".") else "."
        parent = posixpath.dirname(path) or "."
        parents = parent.split("/") if parent != "." else []
        matched = False
        for pat in self._patterns:
            # an inclusion cannot change an already-matched path, nor an exclusion an unmatched one
            if pat.exclusion != matched:
                continue
            hit = bool(pat.regex.match(path))
            if not hit:
                for k in range(1, len(parents) + 1):
                    if pat.regex.match("/".join(parents[:k])):
                        hit = True
                        break
            if hit:
                matched = not pat.exclusion
        return matched

    def excludes_dir_entirely(self, directory: str) -> bool:
        """True when ``directory`` is ignored and no ``!`` pattern can re-include anything
        below it, so a walk may skip it."""
        if not self.matches(directory):
            return False
        parts = _clean(directory.lstrip("/")).split("/")
        for pat in self._patterns:
            if pat.exclusion and _may_match_below(pat.text, parts):
                return False
        return True


def _may_match_below(pattern: str, dir_parts: list[str]) -> bool:
    """Whether ``pattern`` could match some path under the directory ``dir_parts``."""
    pat_parts = pattern.split("/")
    for k, dpart in enumerate(dir_parts):
        if k >= len(pat_parts):
            return False  # the pattern names the directory itself or a parent (already judged)
        ppart = pat_parts[k]
        if "**" in ppart:
            return True
        if not _compile(ppart).match(dpart):
            return False
    return len(pat_parts) > len(dir_parts)
