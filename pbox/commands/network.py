"""The `network` group: create, ls, inspect, rm, prune, connect, disconnect."""

from __future__ import annotations

import sys

import click

from pbox.commands._util import emit_json, emit_rows

CTX = {"help_option_names": ["-h", "--help"]}
LS_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
              "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
              "CreatedAt": "CREATED AT"}


def _store(config, create=False):
    from pbox.storage.store import Store

    return Store.open(config.root, config.runroot, create=create)


def _enter(config):
    # Plugging containers in and out happens in the user's namespace, which owns
    # theirs and the networks'.
    from pbox.commands._util import notice_once
    from pbox.images import enter_userns

    enter_userns(config, notice_once())


def _pairs(items, what: str) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise click.UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


@click.command(context_settings=CTX)
@click.argument("name")
@click.option("-d", "--driver", default="bridge", help="Driver (only 'bridge').")
@click.option("--subnet", default="", metavar="CIDR", help="Subnet, e.g. 10.89.5.0/24.")
@click.option("--gateway", default="", metavar="IP", help="The bridge's address.")
@click.option("--internal", is_flag=True, help="No outbound access (and no published ports).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Set metadata on the network.")
@click.option("-o", "--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="Driver options (recorded).")
@click.pass_obj
def create(config, name, driver, subnet, gateway, internal, labels, opts):
    """Create a network and print its id."""
    from pbox import networks

    rec = networks.create(_store(config, create=True), name, subnet=subnet, gateway=gateway,
                          internal=internal, labels=_pairs(labels, "label"), driver=driver,
                          options=_pairs(opts, "option"))
    click.echo(rec["Id"])


@click.command(context_settings=CTX)
@click.option("-q", "--quiet", is_flag=True, help="Only display network ids.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: name=, id=, driver=, label=KEY[=VALUE], type=custom|builtin.")
@click.option("--format", "fmt", metavar="TEMPLATE",
              help="Go template, 'table TEMPLATE', or 'json'.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the ids.")
@click.pass_obj
def ls(config, quiet, filters, fmt, no_trunc):
    """List networks."""
    from pbox import networks

    filt = {}
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            raise click.UsageError(f"bad format of filter (expected name=value): {f}")
        filt[k] = v
    rows = networks.list_rows(_store(config), filt)
    if no_trunc:
        for r in rows:
            r["ID"] = r["_id"]
    emit_rows(rows, fmt, "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", LS_HEADERS,
              quiet_field="ID", quiet=quiet)


@click.command(context_settings=CTX)
@click.argument("names", metavar="NETWORK...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.pass_obj
def inspect(config, names, fmt):
    """Display detailed information on one or more networks."""
    from pbox import networks
    from pbox.errors import NotFound

    store = _store(config)
    objs, missing = [], []
    for name in names:
        try:
            objs.append(networks.inspect(store, name))
        except NotFound:
            missing.append(name)
            continue
        if name not in networks.PREDEFINED:
            warning = networks.holder_status(store, networks.find(store, name))
            if warning:
                click.echo(f"WARNING: {warning}", err=True)
    if objs or not fmt:
        emit_json(objs, fmt)
    if missing:
        raise NotFound("\nError: ".join(f"network {m} not found" for m in missing), exit_code=1)


@click.command(context_settings=CTX)
@click.argument("names", metavar="NETWORK...", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Do not fail for networks that do not exist.")
@click.pass_obj
def rm(config, names, force):
    """Remove one or more networks (not while a container runs on them)."""
    from pbox import networks
    from pbox.errors import NetworkNotFound, PboxError

    _enter(config)
    store = _store(config)
    failed = None
    for name in names:
        try:
            networks.remove(store, name)
            click.echo(name)
        except NetworkNotFound as e:
            if not force:
                click.echo(f"Error: {e}", err=True)
                failed = failed or e
        except PboxError as e:
            click.echo(f"Error: {e}", err=True)
            failed = e
    if failed is not None:
        sys.exit(1)  # as docker, podman, and `volume rm`: each error printed above


@click.command(context_settings=CTX)
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, hidden=True)
@click.pass_obj
def prune(config, force, filters):
    """Remove all networks no container refers to."""
    if filters:
        # docker's filters (until, label) are not kept: accepting one and ignoring it
        # would remove more than the user asked for
        from pbox.errors import UsageError

        raise UsageError(f"--filter is not supported by network prune: {filters[0]!r}")
    from pbox import networks

    if not force:
        click.echo("WARNING! This will remove all custom networks not used by at least one "
                   "container.")
        if not click.confirm("Are you sure you want to continue?", default=False):
            return
    _enter(config)
    removed = networks.prune(_store(config))
    if removed:
        click.echo("Deleted Networks:")
        for n in removed:
            click.echo(n)


def _container(config, text):
    from pbox.containers.records import ContainerStore

    store = _store(config)
    return store, ContainerStore(store).find(text)


@click.command(context_settings=CTX)
@click.argument("network")
@click.argument("container")
@click.option("--alias", "aliases", multiple=True, help="Add a network-scoped alias.")
@click.option("--ip", default="", metavar="IPV4", help="The container's address on it.")
@click.pass_obj
def connect(config, network, container, aliases, ip):
    """Connect a container to a network (at once when it is running)."""
    from pbox import networks

    _enter(config)
    store, cid = _container(config, container)
    networks.connect(store, network, cid, list(aliases), ip)


@click.command(context_settings=CTX)
@click.argument("network")
@click.argument("container")
@click.option("-f", "--force", is_flag=True, help="Force (accepted for docker's sake).")
@click.pass_obj
def disconnect(config, network, container, force):
    """Disconnect a container from a network."""
    from pbox import networks

    _enter(config)
    store, cid = _container(config, container)
    networks.disconnect(store, network, cid)


@click.group(context_settings=CTX)
def network():
    """Manage networks."""


for _cmd in (create, ls, inspect, rm, prune, connect, disconnect):
    network.add_command(_cmd)
network.add_command(ls, "list")
network.add_command(rm, "remove")
