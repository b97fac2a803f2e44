"""The kernel side: ctypes syscalls, id mapping, mounts, the container launcher."""

import os


def make_runroot(runroot: str) -> None:
    """Create the run root if needed; RuntimeFailure when it cannot be used.  (Here, not
    in ``pause``: a pull checks it before its first request, and imports ``pause``, with
    the syscalls, while that request is on its way.)"""
    try:
        os.makedirs(runroot, mode=0o700, exist_ok=True)
    except OSError as e:
        from pbox.errors import RuntimeFailure

        why = "not a directory" if isinstance(e, FileExistsError) else e.strerror
        raise RuntimeFailure(f"cannot use the run root {runroot} (--runroot, "
                             f"PBOX_RUNROOT): {why}") from None
