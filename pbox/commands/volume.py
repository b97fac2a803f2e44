"""The `volume` group: create, ls, inspect, rm, prune."""

from __future__ import annotations

import click

from pbox.commands._util import emit_json, emit_rows

CTX = {"help_option_names": ["-h", "--help"]}
LS_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE",
              "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS",
              "Size": "SIZE"}


def _store(config, create=False):
    from pbox.storage.store import Store

    return Store.open(config.root, config.runroot, create=create)


def _enter(config):
    # Volume contents belong to container ids: only inside the user's namespace can
    # they be measured and removed.
    from pbox.commands._util import notice_once
    from pbox.images import enter_userns

    enter_userns(config, notice_once())


def _pairs(items, what: str, need_value: bool) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or (need_value and not sep):
            raise click.UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


@click.command(context_settings=CTX)
@click.argument("name", required=False, default="")
@click.option("-d", "--driver", default="local", help="Volume driver (only 'local').")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Set metadata on the volume.")
@click.option("-o", "--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="Driver options: type=none,o=bind,device=/host/dir makes a bind volume.")
@click.option("--name", "name_opt", default="", hidden=True)
@click.pass_obj
def create(config, name, driver, labels, opts, name_opt):
    """Create a volume and print its name (a random one when NAME is not given)."""
    from pbox.containers import volumes

    if driver != "local":
        raise click.UsageError(f"volume driver {driver!r} is not supported (only 'local')")
    if name and name_opt and name != name_opt:
        raise click.UsageError("conflicting options: either specify --name or provide "
                               "positional arg, not both")
    name = name or name_opt
    _enter(config)
    vol = volumes.create(_store(config, create=True), name,
                         labels=_pairs(labels, "label", need_value=False),
                         options=_pairs(opts, "option", need_value=True))
    click.echo(vol.name)


@click.command(context_settings=CTX)
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: name=, label=KEY[=VALUE], dangling=true|false, driver=.")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="Go template, 'table TEMPLATE', or 'json'.")
@click.pass_obj
def ls(config, quiet, filters, fmt):
    """List volumes."""
    from pbox.containers import volumes

    store = _store(config)
    rows = volumes.list_volumes(store, volumes.parse_filters(filters)) if store.exists else []
    emit_rows(rows, fmt, "table {{.Driver}}\t{{.Name}}", LS_HEADERS, quiet_field="Name",
              quiet=quiet)


@click.command(context_settings=CTX)
@click.argument("names", metavar="VOLUME...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.pass_obj
def inspect(config, names, fmt):
    """Display detailed information on one or more volumes."""
    from pbox.containers import volumes
    from pbox.errors import NotFound

    store = _store(config)
    objs, missing = [], []
    for name in names:
        try:
            objs.append(volumes.inspect(store, name))
        except NotFound:
            missing.append(name)
    if objs or not fmt:
        emit_json(objs, fmt)  # docker prints `[]` when nothing was found
    if missing:
        raise NotFound("\nError: ".join(f"No such volume: {m}" for m in missing), exit_code=1)


@click.command(context_settings=CTX)
@click.argument("names", metavar="VOLUME...", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Do not fail for volumes that do not exist.")
@click.pass_obj
def rm(config, names, force):
    """Remove one or more volumes (not while a container uses them)."""
    from pbox.containers import volumes
    from pbox.errors import PboxError, VolumeNotFound

    _enter(config)
    store = _store(config)
    failed = False
    for name in names:
        try:
            volumes.remove(store, name)
        except VolumeNotFound as e:
            if not force:
                click.echo(f"Error: {e}", err=True)
                failed = True
            continue
        except PboxError as e:
            click.echo(f"Error: {e}", err=True)
            failed = True
            continue
        click.echo(name)
    if failed:
        raise SystemExit(1)


@click.command(context_settings=CTX)
@click.option("-a", "--all", "all_volumes", is_flag=True,
              help="Remove all unused volumes, not just anonymous ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: label=KEY[=VALUE], all=true.")
@click.pass_obj
def prune(config, all_volumes, force, filters):
    """Remove unused volumes: anonymous ones, or all of them with -a."""
    from pbox.containers import volumes
    from pbox.humanize import human_size

    parsed = volumes.parse_filters(filters, volumes.PRUNE_FILTER_KEYS)
    if not force:
        what = "all local volumes" if all_volumes else "anonymous local volumes"
        if not click.confirm(f"WARNING! This will remove {what} not used by at least one "
                             f"container.\nAre you sure you want to continue?",
                             default=False):
            return
    _enter(config)
    store = _store(config)
    result = volumes.prune(store, all_volumes=all_volumes, filters=parsed) \
        if store.exists else volumes.PruneResult([], 0)
    if result.deleted:
        click.echo("Deleted Volumes:")
        for name in result.deleted:
            click.echo(name)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(result.reclaimed)}")


@click.group(context_settings=CTX)
def volume():
    """Manage volumes."""


for _name, _cmd in [("create", create), ("ls", ls), ("list", ls), ("inspect", inspect),
                    ("rm", rm), ("remove", rm), ("prune", prune)]:
    volume.add_command(_cmd, _name)
