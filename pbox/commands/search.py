"""search."""

from __future__ import annotations

import click

from pbox.commands._util import emit_rows

HEADERS = {"Index": "INDEX", "Name": "NAME", "Description": "DESCRIPTION", "Stars": "STARS",
           "Official": "OFFICIAL", "Automated": "AUTOMATED"}
DESCRIPTION_WIDTH = 44


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("term")
@click.option("--limit", type=click.IntRange(min=1), default=25, show_default=True,
              help="Maximum number of results per registry.")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="Go template, 'table TEMPLATE', or 'json'.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate descriptions.")
@click.option("--tls-verify/--no-tls-verify", "tls_verify", default=None,
              help="Verify the registry's TLS certificate (default: true).")
@click.pass_obj
def search(config, term, limit, fmt, no_trunc, tls_verify):
    """Search registries for images.

    HOST/TERM searches the registry at HOST (its /v2/_catalog: repositories whose name
    contains TERM); a bare TERM searches the unqualified-search-registries of
    registries.conf (docker.io, through its /v1/search, when there is no such file).
    """
    from pbox import registries

    rows = registries.search(config, term, limit=limit, tls_verify=tls_verify)
    if not no_trunc:
        for r in rows:
            d = r["Description"].replace("\n", " ")
            if len(d) > DESCRIPTION_WIDTH:
                d = d[:DESCRIPTION_WIDTH] + "..."
            r["Description"] = d
    emit_rows(rows, fmt, "table {{.Name}}\t{{.Description}}", HEADERS)
