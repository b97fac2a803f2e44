"""`doctor`: check what rootless containers need on this host."""

from __future__ import annotations

import json

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--format", "fmt", metavar="FORMAT",
              help="'json' for scripts, or a Go template run for each check "
                   "(fields Name, Title, Status, Message, Fix).")
@click.pass_obj
def doctor(config, fmt):
    """Check what rootless containers need on this host.

    Prints [ok], [warn] or [fail] for each requirement, with the command that fixes
    each problem.  Exits 1 when a check failed, 0 otherwise.
    """
    from pbox import doctor as doc

    checks = doc.gather(config.root, config.runroot)
    if fmt == "json":
        click.echo(json.dumps([c.to_dict() for c in checks], indent=4))
    elif fmt:
        from pbox.commands._util import emit_json

        emit_json([c.to_dict() for c in checks], fmt)
    else:
        click.echo(doc.render_text(checks), nl=False)
    return doc.exit_code(checks)
