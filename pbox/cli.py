"""The command line: parse, call one library function, print.

Command modules under ``pbox.commands`` are imported only when their command runs
(pip's lazy command table), so ``pbox ps`` never pays for the registry client.
This module is the one choke point that turns exceptions into ``Error: ...`` and
docker's exit codes.
"""

from __future__ import annotations

import os

import click

from pbox import __version__
from pbox.errors import EXIT_PBOX

# name -> (module, attribute, one-line help).  Management groups ("image",
# "container", ...) are commands too; docker's top-level shortcuts map to the
# same functions.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pull": ("pbox.commands.images", "pull", "Download an image from a registry"),
    "images": ("pbox.commands.images", "images", "List images"),
    "inspect": ("pbox.commands.inspect", "inspect", "Return low-level information on objects"),
    "history": ("pbox.commands.images", "history", "Show the history of an image"),
    "tag": ("pbox.commands.images", "tag", "Create a tag TARGET that refers to SOURCE"),
    "rmi": ("pbox.commands.images", "rmi", "Remove one or more images"),
    "image": ("pbox.commands.images", "image", "Manage images"),
    "system": ("pbox.commands.system", "system", "Manage pbox"),
    "run": ("pbox.commands.containers", "run", "Create and run a new container from an image"),
    "create": ("pbox.commands.containers", "create", "Create a new container"),
    "start": ("pbox.commands.containers", "start", "Start one or more stopped containers"),
    "stop": ("pbox.commands.containers", "stop", "Stop one or more running containers"),
    "restart": ("pbox.commands.containers", "restart", "Restart one or more containers"),
    "kill": ("pbox.commands.containers", "kill", "Kill one or more running containers"),
    "rm": ("pbox.commands.containers", "rm", "Remove one or more containers"),
    "ps": ("pbox.commands.containers", "ps", "List containers"),
    "logs": ("pbox.commands.containers", "logs", "Fetch the logs of a container"),
    "wait": ("pbox.commands.containers", "wait", "Block until containers stop; print exit codes"),
    "rename": ("pbox.commands.containers", "rename", "Rename a container"),
    "port": ("pbox.commands.port", "port",
             "List port mappings or a specific mapping for the container"),
    "exec": ("pbox.commands.exec", "exec_command", "Execute a command in a running container"),
    "attach": ("pbox.commands.exec", "attach_command",
               "Attach to the output of a running container"),
    "top": ("pbox.commands.exec", "top_command", "Display the running processes of a container"),
    "cp": ("pbox.commands.fsops", "cp",
           "Copy files/folders between a container and the local filesystem"),
    "diff": ("pbox.commands.fsops", "diff", "Inspect changes to files on a container's filesystem"),
    "commit": ("pbox.commands.fsops", "commit", "Create a new image from a container's changes"),
    "export": ("pbox.commands.fsops", "export", "Export a container's filesystem as a tar archive"),
    "login": ("pbox.commands.distribution", "login", "Log in to a registry"),
    "logout": ("pbox.commands.distribution", "logout", "Log out from a registry"),
    "push": ("pbox.commands.distribution", "push", "Upload an image to a registry"),
    "search": ("pbox.commands.search", "search", "Search registries for images"),
    "save": ("pbox.commands.archive", "save", "Save one or more images to a tar archive"),
    "load": ("pbox.commands.archive", "load", "Load images from a tar archive"),
    "import": ("pbox.commands.archive", "import_command",
               "Import a root filesystem tar as an image"),
    "container": ("pbox.commands.containers", "container", "Manage containers"),
    "build": ("pbox.commands.build", "build", "Build an image from a Dockerfile"),
    "builder": ("pbox.commands.build", "builder", "Manage the build cache"),
    "version": ("pbox.commands.system", "version", "Show the pbox version information"),
    "info": ("pbox.commands.system", "info", "Display system-wide information"),
    "volume": ("pbox.commands.volume", "volume", "Manage volumes"),
    "network": ("pbox.commands.network", "network", "Manage networks"),
    "doctor": ("pbox.commands.doctor", "doctor", "Check what rootless containers need on this host"),
}


class LazyGroup(click.Group):
    """A group whose subcommands live in a table and are imported on use."""

    def __init__(self, *args, table: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table or {}

    def list_commands(self, ctx):
        return sorted(set(self.table) | set(self.commands))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        entry = self.table.get(name)
        if entry is None:
            return None
        import importlib

        module = importlib.import_module(entry[0])
        cmd = getattr(module, entry[1])
        self.commands[name] = cmd
        return cmd

    def format_commands(self, ctx, formatter):
        rows = [(name, self.table[name][2] if name in self.table else
                 (self.commands[name].get_short_help_str(60)))
                for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        cmd_name = args[0] if args else None
        cmd = self.get_command(ctx, cmd_name) if cmd_name else None
        if cmd is None and cmd_name and not cmd_name.startswith("-"):
            raise click.UsageError(f"unknown command {cmd_name!r} for {ctx.command_path!r}")
        return super().resolve_command(ctx, args)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=LazyGroup, table=COMMANDS, context_settings=CONTEXT)
@click.option("--root", envvar="PBOX_ROOT", metavar="DIR",
              help="Store directory (default ~/.local/share/pbox; env PBOX_ROOT).")
@click.option("--runroot", envvar="PBOX_RUNROOT", metavar="DIR",
              help="Run-time state directory (default $XDG_RUNTIME_DIR/pbox).")
@click.option("--storage-driver", envvar="PBOX_STORAGE_DRIVER",
              type=click.Choice(["overlay", "fuse-overlayfs", "vfs"]),
              help="How container root filesystems are mounted (default: best available).")
@click.option("--log-level", default=None, envvar="PBOX_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Logging detail on stderr (default warning).")
@click.version_option(__version__, "-v", "--version", prog_name="pbox",
                      message="pbox version %(version)s")
@click.pass_context
def cli(ctx, root, runroot, storage_driver, log_level):
    """A rootless, daemonless, docker-compatible container tool."""
    from pbox.config import Config

    config = Config.from_env(root=root, runroot=runroot, log_level=log_level,
                             storage_driver=storage_driver)
    from pbox.commands.fast import configure_logging

    configure_logging(config.log_level)
    ctx.obj = config


def die(message: str, code: int = EXIT_PBOX) -> None:
    from pbox.commands.fast import die as fast_die

    fast_die(message, code)


def main(argv: list[str] | None = None) -> None:
    """Run pbox with ``argv`` (default: the program's, through the short path of
    ``pbox.commands.fast`` for the hot container commands)."""
    if argv is None:
        from pbox.commands.fast import main as entry

        entry()
        return
    debug = "debug" in argv or os.environ.get("PBOX_LOG_LEVEL", "").lower() == "debug"
    try:
        rc = cli.main(args=argv, prog_name="pbox", standalone_mode=False)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # click >= 8.2: `pbox image` alone
            click.echo(e.ctx.get_help())
            raise SystemExit(0)
        hint = ""
        if e.ctx is not None:
            hint = f"\nSee '{e.ctx.command_path} --help'."
        die(f"{e.format_message()}{hint}")
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code)
    except click.Abort as e:
        if isinstance(e.__context__, EOFError):
            # a prompt met the end of stdin (a script without -f): nothing was done
            die("no answer to the confirmation prompt on stdin (use -f to skip it)")
        raise SystemExit(130)
    except click.ClickException as e:
        die(e.format_message())
    except (Exception, KeyboardInterrupt) as e:
        from pbox.commands.fast import report_error

        report_error(e, debug=debug)
    if isinstance(rc, int):
        raise SystemExit(rc)
    raise SystemExit(0)
