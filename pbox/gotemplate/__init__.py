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

This module is the public face (Template, render, format_rows); the work is in
``parse`` (lexer and parser), ``exec`` (the evaluator), ``funcs`` (the functions),
``values`` (Go's truth, type names, fmt and json printing) and ``table`` (header
titles and the tabwriter).
"""

from __future__ import annotations

from collections.abc import Iterable

from pbox.errors import UsageError
from pbox.gotemplate.exec import _Exec
from pbox.gotemplate.funcs import _FUNCS, _HEADER_FUNCS
from pbox.gotemplate.parse import _Op, _ParseError, _Parser
from pbox.gotemplate.table import _Headers, _tabwriter, default_header, tabwrite
from pbox.gotemplate.values import NO_VALUE, Struct, _ExecError

TYPE_CHECKING = False  # typing costs ~3 ms to import; Any is only an annotation
if TYPE_CHECKING:
    from typing import Any

__all__ = ["NO_VALUE", "Template", "default_header", "format_rows", "render", "tabwrite"]


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


def format_rows(fmt: str, rows: Iterable[Any], headers: dict[str, str] | None = None, *,
                default: str | None = None,
                row_type: str = "*formatter.Context") -> str:  # fmt: skip
    """Render rows the way docker's ``--format`` does; the result ends with a newline per row.

    ``json`` prints one compact JSON object per row; ``table ...`` prints a header row
    (``headers`` maps a field path such as ``ID`` to its title, default_header() names
    the rest) and aligns the columns; anything else is a template run once per row.
    The two-character escapes ``\\t`` and ``\\n`` a user types become a tab and a newline.
    ``default`` replaces an empty format or a bare ``table``.  A row (a dict) is docker's
    typed context named ``row_type``: a field it lacks is an error, as in docker.
    """
    if default is not None and fmt.strip() in ("", "table"):
        fmt = default
    is_table = fmt.startswith("table")
    body = "{{json .}}" if fmt == "json" else fmt[5:] if is_table else fmt
    body = body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    tpl = Template(body)
    out: list[str] = []
    for row in rows:
        tpl._run(Struct(row, row_type) if type(row) is dict else row, _FUNCS, out)
        out.append("\n")
    if not is_table:
        return "".join(out)
    head: list[str] = []
    try:
        tpl._run(_Headers(headers or {}), _HEADER_FUNCS, head)
    except UsageError:
        pass  # docker prints whatever the header template produced before failing
    return _tabwriter("".join(head) + "\n" + "".join(out))
