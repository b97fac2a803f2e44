"""Shared bits of the click commands: output of tables/templates, progress, prompts."""

from __future__ import annotations

import json
import sys

import click


def emit_rows(rows: list[dict], fmt: str | None, default: str, headers: dict[str, str],
              quiet_field: str | None = None, quiet: bool = False) -> None:
    """Print rows as docker does: quiet ids, a user --format, or the default table."""
    from pbox.gotemplate import format_rows

    if quiet and quiet_field:
        for r in rows:
            click.echo(r[quiet_field])
        return
    text = format_rows(fmt or default, rows, headers)
    if text:
        click.echo(text if text.endswith("\n") else text + "\n", nl=False)


def emit_json(objs: list, fmt: str | None) -> None:
    """`inspect`: a JSON array (docker's indent of 4), or one template line per object."""
    if fmt:
        from pbox.gotemplate import render

        fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
        if fmt == "json":
            fmt = "{{json .}}"
        for o in objs:
            click.echo(render(fmt, o))
        return
    click.echo(json.dumps(objs, indent=4, ensure_ascii=False))


def quiet_echo(text: str, quiet: bool) -> None:
    if not quiet:
        click.echo(text)


def is_tty(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def notice_once(config=None):
    """A callback library code calls for one-time notices (printed to stderr); see
    ``pbox.commands.fast.notice_once``, which the short path of `run` uses too."""
    from pbox.commands.fast import notice_once as impl

    return impl(config)


class PullProgress:
    """Renders pull events like docker: per-layer lines, live bars on a terminal."""

    def __init__(self, out=None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet
        self.tty = is_tty(self.out) and not quiet
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self.drawn = 0

    @staticmethod
    def short(digest: str) -> str:
        return digest.partition(":")[2][:12]

    def __call__(self, event: str, **info) -> None:
        if self.quiet:
            return
        if event == "resolving":
            ref = info["ref"]
            self._print(f"{ref.tag or ref.digest}: Pulling from {ref.repository}")
            return
        if event == "digest":
            self._print(f"Digest: {info['digest']}")
            return
        layer = info.get("layer")
        if layer is None:
            return
        sid = self.short(layer)
        text = {
            "layer-exists": "Already exists",
            "layer-waiting": "Pulling fs layer",
            "layer-extracting": "Extracting",
            "layer-done": "Pull complete",
        }.get(event)
        if event == "layer-downloading":
            if not self.tty:
                return
            text = self._bar(info.get("current", 0), info.get("total", 0))
        if text is None:
            return
        if not self.tty:
            if event != "layer-extracting":
                self._print(f"{sid}: {text}")
            return
        if sid not in self.lines:
            self.order.append(sid)
        self.lines[sid] = f"{sid}: {text}"
        self._redraw()

    @staticmethod
    def _bar(current: int, total: int) -> str:
        from pbox.humanize import human_size

        if total <= 0:
            return f"Downloading  {human_size(current)}"
        width = 50
        filled = min(width, int(width * current / total))
        bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (width - filled)
        return f"Downloading [{bar}]  {human_size(current)}/{human_size(total)}"

    def _redraw(self) -> None:
        w = self.out.write
        if self.drawn:
            w(f"\x1b[{self.drawn}A")
        for sid in self.order:
            w("\x1b[2K" + self.lines[sid] + "\n")
        self.drawn = len(self.order)
        self.out.flush()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self.drawn = 0 if not self.tty else self.drawn
        if self.tty:
            self.order, self.lines, self.drawn = [], {}, 0


def pull_report():
    """Progress of an implicit pull (run, create, build's FROM) goes to stderr, as
    docker's does."""
    progress = PullProgress(out=sys.stderr)

    def report(event, **info):
        if event == "missing-locally":
            click.echo(f"Unable to find image '{info['name']}' locally", err=True)
            return
        progress(event, **info)
    return report
