"""exec, attach and top: working with a running container."""

from __future__ import annotations

import sys

import click

from pbox.commands._util import notice_once

CTX = {"help_option_names": ["--help"]}
# Options end at the container's name: what follows is the command (or ps's options).
RUN_CTX = {**CTX, "allow_interspersed_args": False}


@click.command("exec", context_settings=RUN_CTX)
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-e", "--env", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone: take it from here).")
@click.option("--env-file", multiple=True, metavar="FILE",
              help="Read environment variables from a file.")
@click.option("-w", "--workdir", default="", metavar="DIR",
              help="Working directory inside the container (default: the container's).")
@click.option("-u", "--user", default="", metavar="USER[:GROUP]",
              help="Username or UID, optionally with a group (default: the container's).")
@click.option("--privileged", is_flag=True,
              help="Give the command every capability.")
@click.option("--detach-keys", default=None, hidden=True,
              help="Accepted for compatibility; pbox has no detach keys.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_command(config, container, command, interactive, tty, detach, env, env_file,
                 workdir, user, privileged, detach_keys):
    """Run COMMAND in the running CONTAINER; exit with its exit code."""
    from pbox.containers import execute, lifecycle

    lifecycle.enter(config)
    o = execute.ExecOptions(command=list(command), interactive=interactive, tty=tty,
                            detach=detach, env=list(env), env_files=list(env_file),
                            workdir=workdir, user=user, privileged=privileged)
    return execute.exec_in_container(config, container, o)


@click.command("attach", context_settings=CTX)
@click.option("--no-stdin", is_flag=True,
              help="Do not attach STDIN.")
@click.option("--sig-proxy", type=click.BOOL, default=True, is_flag=False, flag_value=True,
              metavar="[=BOOL]", help="Pass the signals pbox receives to the container "
                                      "(default true).")
@click.option("--detach-keys", default=None, hidden=True,
              help="Accepted for compatibility; pbox has no detach keys.")
@click.argument("container")
@click.pass_obj
def attach_command(config, container, no_stdin, sig_proxy, detach_keys):
    """Follow the output of a running CONTAINER until it exits; exit with its code.

    Output from now on, stdout and stderr kept apart.  Our stdin goes to the
    container's when it was created with -i (lines as typed: the terminal is not put
    in raw mode); other containers have stdin on /dev/null (use 'pbox exec -it' to
    work inside one).
    """
    from pbox.containers import execute, lifecycle

    notice = None if no_stdin else notice_once()
    lifecycle.enter(config)
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def emit(stream: str, data: bytes) -> None:
        f = err if stream == "stderr" else out
        f.write(data)
        f.flush()

    return execute.attach(config, container, emit, sig_proxy=sig_proxy, notice=notice)


@click.command("top", context_settings=RUN_CTX)
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def top_command(config, container, ps_args):
    """Display the running processes of CONTAINER.

    Without PS_ARGS: docker's columns (UID PID PPID C STIME TTY TIME CMD), host pids.
    With them: the host's ps with those options (they must include the PID column),
    filtered to the container's processes.
    """
    from pbox.containers import execute, lifecycle
    from pbox.gotemplate import tabwrite

    lifecycle.enter(config)
    titles, rows = execute.top(config, container, list(ps_args))
    lines = ["\t".join(titles)] + ["\t".join(r) for r in rows]
    click.echo(tabwrite(lines, minwidth=20, padding=3), nl=False)
