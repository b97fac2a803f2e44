"""pbox: a rootless, daemonless, docker-compatible container tool."""

__version__ = "0.1.0"
