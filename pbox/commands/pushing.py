"""What `push` prints, without click.

The click command (``pbox.commands.distribution.push``) and the short path of
``pbox.commands.fast`` both call :func:`push`, so the two print the same lines; the
short path only saves importing click (~25 ms, more than a whole re-push takes now).
"""

from __future__ import annotations

from pbox.commands.listing import echo


class PushProgress:
    """docker's lines: one per layer when it is done (short blob ids)."""

    def __init__(self, quiet: bool, echo=echo):
        self.quiet = quiet
        self.echo = echo

    def __call__(self, event: str, **info) -> None:
        if self.quiet:
            return
        layer = (info.get("layer") or "").partition(":")[2][:12]
        if event == "start":
            self.echo(f"The push refers to repository [{info['repository']}]")
        elif event == "layer-exists":
            self.echo(f"{layer}: Layer already exists")
        elif event == "layer-mounted":
            self.echo(f"{layer}: Mounted from {info['source']}")
        elif event == "layer-pushed":
            self.echo(f"{layer}: Pushed")


def push(config, *, image: str, destination: str | None, quiet: bool,
         digestfile: str | None, compression: str, fmt: str | None, creds: str | None,
         tls_verify: bool | None, cert_dir: str | None, notice, echo=echo) -> None:
    """`push`'s keyword arguments as click passes them: upload, then docker's last line."""
    from pbox import distribution

    result = distribution.push(
        config, image, destination,
        distribution.PushOptions(tls_verify=tls_verify, cert_dir=cert_dir, creds=creds,
                                 compression=compression, format=fmt),
        report=PushProgress(quiet, echo), notice=notice,
    )
    if digestfile:
        with open(digestfile, "w") as f:
            f.write(result.digest)
    if not quiet:
        tag = result.reference.tag or "latest"
        echo(f"{tag}: digest: {result.digest} size: {result.size}")
