"""Container commands: run, create, start, stop, kill, restart, rm, ps, logs, wait,
rename, and the `container` group."""

from __future__ import annotations

import sys

import click

from pbox.commands._util import notice_once
from pbox.commands.pulling import pull_report

CTX = {"help_option_names": ["--help"], "ignore_unknown_options": False}
# Options end at the image name: what follows is the container's command (docker's rule).
RUN_CTX = {**CTX, "allow_interspersed_args": False}


def run_options(f):
    """The options `run` and `create` share (docker's names)."""
    opts = [
        click.option("--name", default="", help="Assign a name to the container."),
        click.option("-e", "--env", multiple=True, metavar="KEY[=VALUE]",
                     help="Set an environment variable (KEY alone: take it from here)."),
        click.option("--env-file", multiple=True, metavar="FILE",
                     help="Read environment variables from a file."),
        click.option("-w", "--workdir", default="", metavar="DIR",
                     help="Working directory inside the container (created if missing)."),
        click.option("-u", "--user", default="", metavar="USER[:GROUP]",
                     help="Username or UID, optionally with a group."),
        click.option("--group-add", multiple=True, metavar="GID",
                     help="Add an additional group."),
        click.option("--entrypoint", default=None, help="Overwrite the image's ENTRYPOINT."),
        click.option("-h", "--hostname", default="", help="Container host name."),
        click.option("--domainname", default="", help="Container NIS domain name."),
        click.option("--add-host", multiple=True, metavar="HOST:IP",
                     help="Add a line to /etc/hosts; IP host-gateway is the address "
                          "where the container reaches the host."),
        click.option("--dns", multiple=True, metavar="IP", help="Set a DNS server."),
        click.option("--dns-search", multiple=True, metavar="DOMAIN",
                     help="Set a DNS search domain."),
        click.option("--dns-option", multiple=True, metavar="OPT", help="Set a DNS option."),
        click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only."),
        click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="Mount a tmpfs."),
        click.option("-v", "--volume", multiple=True, metavar="SRC:DST[:OPTS]",
                     help="Bind mount a host path or a named volume."),
        click.option("--mount", multiple=True, metavar="type=...,target=...",
                     help="Attach a mount: type=bind|volume|tmpfs."),
        click.option("-l", "--label", multiple=True, metavar="KEY=VALUE",
                     help="Set a label."),
        click.option("--stop-signal", default="", help="Signal to stop the container."),
        click.option("--stop-timeout", type=int, default=None,
                     help="Seconds to wait before killing the container on stop."),
        click.option("--network", "--net", "network", default="", metavar="MODE",
                     help="Network: pasta (default; also bridge), "
                          "slirp4netns[:allow_host_loopback=true], host, none, "
                          "container:NAME to share a running container's, or the name "
                          "of a user network."),
        click.option("--network-alias", multiple=True, metavar="ALIAS",
                     help="Add a name the container answers to on its user network."),
        click.option("--ip", default="", metavar="IPV4",
                     help="The container's address on its user network."),
        click.option("--link", multiple=True, metavar="NAME[:ALIAS]",
                     help="Add a link to another (running) container: ALIAS in "
                          "/etc/hosts and docker's link variables."),
        click.option("--pull", default="missing",
                     type=click.Choice(["missing", "always", "never"]),
                     help="Pull the image before running (default missing)."),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        click.option("--init", is_flag=True,
                     help="Run an init inside the container that forwards signals and "
                          "reaps processes."),
        click.option("--privileged", is_flag=True,
                     help="Give extended privileges (all capabilities, no masked paths)."),
        click.option("--cap-add", multiple=True, help="Add a Linux capability."),
        click.option("--cap-drop", multiple=True, help="Drop a Linux capability."),
        click.option("--security-opt", multiple=True,
                     help="Security options (no-new-privileges)."),
        click.option("--restart", default="no", metavar="POLICY",
                     help="Restart policy: no, on-failure[:N], always, unless-stopped."),
        click.option("--rm", is_flag=True, help="Remove the container when it exits."),
        click.option("--platform", default=None, help="Platform of the image to pull."),
        click.option("-m", "--memory", default="", help="Memory limit (needs cgroup v2)."),
        click.option("--cpus", default="", help="Number of CPUs (needs cgroup v2)."),
        click.option("--pids-limit", type=int, default=None,
                     help="Process limit (needs cgroup v2)."),
        click.option("--shm-size", default="", help="Size of /dev/shm (default 64m)."),
        click.option("-p", "--publish", multiple=True,
                     metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
                     help="Publish a container's port(s) to the host."),
        click.option("-P", "--publish-all", is_flag=True,
                     help="Publish all exposed ports to random host ports."),
        click.option("--expose", multiple=True, metavar="PORT[/PROTO]",
                     help="Expose a port or a range of ports."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(image, command, kw, detach=False):
    from pbox.containers.options import RunOptions

    return RunOptions(
        image=image, command=list(command), name=kw["name"], env=list(kw["env"]),
        env_files=list(kw["env_file"]), workdir=kw["workdir"], user=kw["user"],
        group_add=list(kw["group_add"]), entrypoint=kw["entrypoint"],
        hostname=kw["hostname"], domainname=kw["domainname"], add_hosts=list(kw["add_host"]),
        dns=list(kw["dns"]), dns_search=list(kw["dns_search"]),
        dns_options=list(kw["dns_option"]), read_only=kw["read_only"],
        tmpfs=list(kw["tmpfs"]), volumes=list(kw["volume"]), mounts=list(kw["mount"]),
        labels=list(kw["label"]), stop_signal=kw["stop_signal"],
        stop_timeout=kw["stop_timeout"], network=kw["network"], pull=kw["pull"],
        rm=kw["rm"], detach=detach, interactive=kw["interactive"], tty=kw["tty"],
        init=kw["init"], privileged=kw["privileged"], cap_add=list(kw["cap_add"]),
        cap_drop=list(kw["cap_drop"]), security_opt=list(kw["security_opt"]),
        restart=kw["restart"], platform=kw["platform"], memory=kw["memory"],
        cpus=kw["cpus"], pids_limit=kw["pids_limit"], shm_size=kw["shm_size"],
        publish=list(kw["publish"]), publish_all=kw["publish_all"], expose=list(kw["expose"]),
        network_aliases=list(kw["network_alias"]), links=list(kw["link"]), ip=kw["ip"],
    )


@click.command(context_settings=RUN_CTX)
@run_options
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(config, image, command, detach, **kw):
    """Create and start a container from IMAGE, running COMMAND."""
    from pbox.containers import create as cr
    from pbox.containers import lifecycle

    notice = notice_once(config)
    lifecycle.enter(config, notice)
    o = _options(image, command, kw, detach)
    if detach and o.rm and o.restart not in ("", "no"):
        raise click.UsageError("conflicting options: --restart and --rm")
    cid = cr.create(config, o, report=pull_report(), notice=notice,
                    hold_signals=() if detach else lifecycle.FORWARDED)
    if detach:
        lifecycle.start_detached(config, cid, notice)
        click.echo(cid)
        return 0
    return lifecycle.run_foreground(config, cid, interactive=o.interactive, tty=o.tty,
                                    notice=notice)


@click.command(context_settings=RUN_CTX)
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def create(config, image, command, **kw):
    """Create a container from IMAGE without starting it; print its id."""
    from pbox.containers import create as cr
    from pbox.containers import lifecycle

    notice = notice_once(config)
    lifecycle.enter(config, notice)
    cid = cr.create(config, _options(image, command, kw), report=pull_report(),
                    notice=notice)
    click.echo(cid)


def _each(config, names, fn, *, echo=True):
    """Apply fn to each container; report errors per name like docker; exit 1 on any."""
    from pbox.containers.records import ContainerStore
    from pbox.errors import PboxError
    from pbox.storage.store import Store

    cs = ContainerStore(Store.open(config.root, config.runroot))
    failed = None
    for name in names:
        try:
            cid = cs.find(name)
            fn(cid)
            if echo:
                click.echo(name)
        except PboxError as e:
            click.echo(f"Error: {e}", err=True)
            failed = e
    if failed is not None:
        if len(names) == 1:
            raise SystemExit(failed.exit_code if failed.exit_code != 125 else 1)
        raise SystemExit(1)


@click.command(context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR (wait for the exit).")
@click.option("-i", "--interactive", is_flag=True, help="Attach STDIN.")
@click.pass_obj
def start(config, containers, attach, interactive):
    """Start one or more stopped containers."""
    from pbox.containers import lifecycle

    lifecycle.enter(config)
    if attach or interactive:
        if len(containers) != 1:
            raise click.UsageError("you cannot start and attach multiple containers at once")
        cs = lifecycle.open_containers(config)
        cid = cs.find(containers[0])
        cfg = cs.config(cid)
        if lifecycle.is_running(cs, cid):
            raise click.UsageError(f"container {containers[0]} is already running")
        return lifecycle.run_foreground(config, cid, interactive=interactive,
                                        tty=cfg["Config"].get("Tty", False))
    _each(config, containers, lambda cid: lifecycle.start(config, cid))


@click.command(context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container (default 10).")
@click.pass_obj
def stop(config, containers, timeout):
    """Stop one or more running containers."""
    from pbox.containers import lifecycle

    lifecycle.enter(config)
    _each(config, containers, lambda cid: lifecycle.stop(config, cid, timeout))


@click.command(context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container (default 10).")
@click.pass_obj
def restart(config, containers, timeout):
    """Restart one or more containers."""
    from pbox.containers import lifecycle

    lifecycle.enter(config)
    _each(config, containers, lambda cid: lifecycle.restart(config, cid, timeout))


@click.command(context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
@click.option("-s", "--signal", "sig", default="KILL", help="Signal to send (default KILL).")
@click.pass_obj
def kill(config, containers, sig):
    """Kill one or more running containers."""
    from pbox.containers import lifecycle
    from pbox.containers.options import parse_signal

    signum = parse_signal(sig)
    lifecycle.enter(config)
    _each(config, containers, lambda cid: lifecycle.kill(config, cid, signum))


@click.command(context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Kill and remove a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.pass_obj
def rm(config, containers, force, volumes):
    """Remove one or more containers."""
    from pbox.containers import lifecycle

    lifecycle.enter(config)
    _each(config, containers,
          lambda cid: lifecycle.remove(config, cid, force=force, volumes=volumes))


@click.command(context_settings=CTX)
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def wait(config, containers):
    """Block until containers stop, then print their exit codes."""
    from pbox.containers import lifecycle

    _each(config, containers, lambda cid: click.echo(lifecycle.wait(config, cid)), echo=False)


@click.command(context_settings=CTX)
@click.argument("container")
@click.argument("new_name")
@click.pass_obj
def rename(config, container, new_name):
    """Rename a container."""
    from pbox.containers import lifecycle

    cs = lifecycle.open_containers(config)
    lifecycle.rename(config, cs.find(container), new_name)


@click.command(context_settings=CTX)
@click.option("-a", "--all", "all_containers", is_flag=True,
              help="Show all containers (default shows just running).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container.")
@click.option("-n", "--last", type=int, default=-1, help="Show the n last created containers.")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: id, name, label, status, exited, ancestor.")
@click.option("--format", "fmt", metavar="TEMPLATE", help="Go template, 'table ...' or 'json'.")
@click.pass_obj
def ps(config, all_containers, quiet, latest, last, size, no_trunc, filters, fmt):
    """List containers."""
    from pbox.commands import listing

    listing.write(listing.ps_text(config, all_containers=all_containers, quiet=quiet,
                                  latest=latest, last=last, size=size, no_trunc=no_trunc,
                                  filters=filters, fmt=fmt))


@click.command(context_settings=CTX)
@click.argument("container")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("--tail", "-n", default="all", help="Number of lines from the end (default all).")
@click.option("--since", default=None, help="Show logs since a time or a duration (10m).")
@click.option("--until", default=None, help="Show logs before a time or a duration.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.pass_obj
def logs(config, container, follow, tail, since, until, timestamps):
    """Fetch the logs of a container (stdout and stderr kept apart)."""
    import os
    import time

    from pbox.containers import logs as lg
    from pbox.containers.records import ContainerStore
    from pbox.storage.store import Store

    cs = ContainerStore(Store(config.root, config.runroot))
    cid = cs.find(container)
    if tail != "all":
        try:
            tail_n = int(tail)
        except ValueError:
            raise click.UsageError(f"invalid --tail {tail!r}")
    else:
        tail_n = None
    since_t = lg.parse_time(since) if since else None
    until_t = lg.parse_time(until) if until else None
    path = cs.path(cid, "ctr.log")
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def emit(entries):
        for stream, text, ts in entries:
            data = (f"{ts} {text}" if timestamps else text).encode()
            (err if stream == "stderr" else out).write(data)
        out.flush()
        err.flush()

    entries, offset = lg.read_entries(path, since=since_t, until=until_t, tail=tail_n)
    emit(entries)
    if not follow:
        return
    while True:
        st = cs.state(cid) if os.path.exists(cs.path(cid)) else {"Status": "removed"}
        entries, offset = lg.read_entries(path, since=since_t, until=until_t, offset=offset)
        emit(entries)
        if st.get("Status") not in ("running", "restarting") and not entries:
            entries, offset = lg.read_entries(path, offset=offset)
            emit(entries)
            return
        time.sleep(0.1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def container():
    """Manage containers."""


@click.command("prune", context_settings=CTX)
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_obj
def container_prune(config, force):
    """Remove all stopped containers."""
    from pbox.containers import lifecycle

    if not force and not click.confirm("WARNING! This will remove all stopped containers.\n"
                                       "Are you sure you want to continue?", default=False):
        return
    lifecycle.enter(config)
    cs = lifecycle.open_containers(config)
    removed = []
    for cid in cs.ids():
        if not lifecycle.is_running(cs, cid):
            lifecycle.remove(config, cid)
            removed.append(cid)
    if removed:
        click.echo("Deleted Containers:\n" + "\n".join(removed))
    click.echo("Total reclaimed space: 0B" if not removed else "")


@click.command("inspect", context_settings=CTX)
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="TEMPLATE", help="Go template, or 'json'.")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes.")
@click.pass_obj
def container_inspect(config, names, fmt, size):
    """Display detailed information on one or more containers."""
    from pbox.commands.inspect import run_inspect

    run_inspect(config, names, fmt, kinds=("container",))


for _name, _cmd in [("run", run), ("create", create), ("start", start), ("stop", stop),
                    ("restart", restart), ("kill", kill), ("rm", rm), ("remove", rm),
                    ("wait", wait), ("rename", rename), ("ls", ps), ("list", ps), ("ps", ps),
                    ("logs", logs), ("prune", container_prune),
                    ("inspect", container_inspect)]:
    container.add_command(_cmd, _name)

# exec, attach and top live in their own module.
from pbox.commands.exec import attach_command, exec_command, top_command  # noqa: E402

for _name, _cmd in [("exec", exec_command), ("attach", attach_command), ("top", top_command)]:
    container.add_command(_cmd, _name)

# cp, diff, commit and export live in their own module.
from pbox.commands import fsops as _fsops  # noqa: E402

for _name, _cmd in [("cp", _fsops.cp), ("diff", _fsops.diff), ("commit", _fsops.commit),
                    ("export", _fsops.export)]:
    container.add_command(_cmd, _name)
