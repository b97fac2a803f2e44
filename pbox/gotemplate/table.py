"""docker's tables: default column titles and Go's text/tabwriter alignment."""

from __future__ import annotations

import re
from collections.abc import Iterable


def default_header(field: str) -> str:
    """``CreatedAt`` -> ``CREATED AT``, ``IPAddress`` -> ``IP ADDRESS``, ``State.Status`` -> ``STATE STATUS``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", field)
    return " ".join(words.replace(".", " ").replace("_", " ").split()).upper()


class _Headers(dict):
    """The data a table's header row is rendered from: any field path names its column."""

    def header(self, path: str) -> str:
        return self.get(path) or default_header(path)


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
