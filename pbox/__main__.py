import sys

if __name__ == "__main__":
    if sys.argv[1:] in (["--version"], ["-v"]):
        # The hot path of scripts that probe for a tool: no import of the CLI at all.
        from pbox import __version__

        sys.stdout.write(f"pbox version {__version__}\n")
    else:
        from pbox.cli import main

        main()
