"""Container lifecycle: create/start/stop/kill/rm/ps/logs/exec/wait.

Glues the store (image layers, the container's own directory) to the kernel side
(``pbox.rootless``).  Nothing here prints or knows click.
"""
