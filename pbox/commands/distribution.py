"""login, logout, push."""

from __future__ import annotations

import sys

import click

from pbox.commands._util import notice_once

CTX = {"help_option_names": ["-h", "--help"]}


def _tls(f):
    f = click.option("--tls-verify/--no-tls-verify", "tls_verify", default=None,
                     help="Verify the registry's TLS certificate (default: true; plain HTTP "
                          "is used for localhost registries).")(f)
    f = click.option("--cert-dir", metavar="DIR",
                     help="Directory with CA certificates (*.crt) and client certs.")(f)
    return f


@click.command(context_settings=CTX)
@click.argument("registry", required=False)
@click.option("-u", "--username", metavar="USER", help="Username.")
@click.option("-p", "--password", metavar="PASS", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin.")
@click.option("--authfile", metavar="FILE", help="Credentials file (default: pbox's auth.json).")
@click.option("--get-login", is_flag=True, help="Print the user name logged in to REGISTRY.")
@_tls
@click.pass_obj
def login(config, registry, username, password, password_stdin, authfile, get_login,
          tls_verify, cert_dir):
    """Log in to a registry (default docker.io)."""
    from pbox import distribution

    if get_login:
        click.echo(distribution.get_login(config, registry, authfile=authfile))
        return
    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise click.UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read()
        if password.endswith("\n"):
            password = password[:-1]
        if password.endswith("\r"):
            password = password[:-1]
        if not password:
            raise click.UsageError("no password on stdin (--password-stdin)")
    elif password is not None:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                   err=True)
    if not username or not password:
        if not sys.stdin.isatty():
            raise click.UsageError("cannot perform an interactive login from a non TTY "
                                   "device (use --username and --password-stdin)")
        if not username:
            username = click.prompt("Username", err=False).strip()
        if not password:
            # getpass turns echo off before it writes the prompt: a password typed as
            # soon as the prompt shows is never echoed (nor flushed away).
            import getpass

            password = getpass.getpass("Password: ")
    distribution.login(config, registry, username, password, tls_verify=tls_verify,
                       cert_dir=cert_dir, authfile=authfile)
    click.echo("Login Succeeded")


@click.command(context_settings=CTX)
@click.argument("registry", required=False)
@click.option("--authfile", metavar="FILE", help="Credentials file (default: pbox's auth.json).")
@click.pass_obj
def logout(config, registry, authfile):
    """Log out from a registry (default docker.io)."""
    from pbox import distribution

    name = distribution.logout(config, registry, authfile=authfile)
    click.echo(f"Removed login credentials for {name}")


@click.command(context_settings=CTX)
@click.argument("image")
@click.argument("destination", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.option("--digestfile", metavar="FILE", help="Write the manifest digest to FILE.")
@click.option("--compression-format", "compression", default="gzip", show_default=True,
              type=click.Choice(["gzip", "zstd"]), help="Layer compression.")
@click.option("--format", "fmt", type=click.Choice(["oci", "v2s2"]), default=None,
              help="Manifest format (default: v2s2 for images that came as v2s2, else oci).")
@click.option("--creds", metavar="USER:PASSWORD", help="Credentials for the registry.")
@_tls
@click.pass_obj
def push(config, image, destination, quiet, digestfile, compression, fmt, creds, tls_verify,
         cert_dir):
    """Upload IMAGE to a registry, as DESTINATION when given."""
    from pbox.commands import pushing

    pushing.push(config, image=image, destination=destination, quiet=quiet,
                 digestfile=digestfile, compression=compression, fmt=fmt, creds=creds,
                 tls_verify=tls_verify, cert_dir=cert_dir, notice=notice_once(config),
                 echo=click.echo)
