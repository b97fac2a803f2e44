"""``python -m pbox``, and the ``pbox`` command of an installed pbox (``main``)."""

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-v"]):
        # The hot path of scripts that probe for a tool: no import of the CLI at all.
        from pbox import __version__

        sys.stdout.write(f"pbox version {__version__}\n")
        return
    # The hot container commands skip click (pbox.commands.fast); the rest goes on to
    # pbox.cli from there.
    from pbox.commands.fast import main as run

    run()


if __name__ == "__main__":
    main()
