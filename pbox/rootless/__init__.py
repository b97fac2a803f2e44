"""The kernel side: ctypes syscalls, id mapping, mounts, the container launcher."""
