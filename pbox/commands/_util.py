"""Shared bits of the click commands: output of tables/templates, progress, prompts."""

from __future__ import annotations

import json

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


def notice_once(config=None):
    """A callback library code calls for one-time notices (printed to stderr); see
    ``pbox.commands.fast.notice_once``, which the short path of `run` uses too."""
    from pbox.commands.fast import notice_once as impl

    return impl(config)
