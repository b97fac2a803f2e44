"""`port`: the published ports of a container (``80/tcp -> 0.0.0.0:5080``)."""

from __future__ import annotations

import click

from pbox.errors import NotFound


@click.command(context_settings={"help_option_names": ["--help"]})
@click.argument("container")
@click.argument("private_port", required=False, metavar="[PRIVATE_PORT[/PROTO]]")
@click.pass_obj
def port(config, container, private_port):
    """List port mappings or a specific mapping for the container."""
    from pbox.containers import ports
    from pbox.containers.records import ContainerStore
    from pbox.storage.store import Store

    cs = ContainerStore(Store(config.root, config.runroot))
    cid = cs.find(container)
    lines = ports.port_lines(ports.live_ports(cs.state(cid)), private_port or "")
    if private_port and not lines:
        key = private_port if "/" in private_port else private_port + "/tcp"
        raise NotFound(f"No public port '{key}' published for {container}", exit_code=1)
    for line in lines:
        click.echo(line)
