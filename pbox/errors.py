"""One exception hierarchy for the whole program.

Library code raises these with a message a user can act on; only ``pbox.cli`` turns
them into ``Error: ...`` on stderr and an exit code.  Exit codes follow docker:
125 pbox itself failed, 126 the command cannot be executed, 127 it was not found.
"""

from __future__ import annotations

EXIT_PBOX = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class PboxError(Exception):
    """Base of every error pbox reports to the user."""

    exit_code = EXIT_PBOX

    def __init__(self, message: str = "", *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


class UsageError(PboxError):
    """The user asked for something that makes no sense (bad flag value, bad format)."""


class InvalidReference(PboxError):
    """An image reference that does not parse."""


class NotFound(PboxError):
    """Something named by the user does not exist."""


class ImageNotFound(NotFound):
    pass


class ContainerNotFound(NotFound):
    pass


class VolumeNotFound(NotFound):
    pass


class NetworkNotFound(NotFound):
    pass


class Conflict(PboxError):
    """A name is taken, an object is in use, a port is bound."""


class DigestMismatch(PboxError):
    """Content did not match the digest it was fetched by."""


class UnsupportedFormat(PboxError):
    """A manifest, media type or archive pbox does not handle (e.g. schema 1)."""


class StoreError(PboxError):
    """The store is damaged, of an unknown version, or cannot be written."""


class RegistryError(PboxError):
    """An error answered by a registry, kept as data (go-containerregistry style).

    ``status`` is the HTTP status, ``code`` the registry's error code
    (``MANIFEST_UNKNOWN``...), ``temporary`` whether retrying may help.
    Messages never contain credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        temporary: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.temporary = temporary


class AuthError(RegistryError):
    """The registry refused our credentials (or wants some)."""


class ManifestUnknown(RegistryError, NotFound):
    """The registry has no such tag or digest."""


class RuntimeFailure(PboxError):
    """Setting up or running a container failed (namespaces, mounts, exec)."""


class CommandNotFound(RuntimeFailure):
    exit_code = EXIT_NOT_FOUND


class CommandNotExecutable(RuntimeFailure):
    exit_code = EXIT_CANNOT_EXECUTE


class BuildError(PboxError):
    """A Dockerfile could not be parsed or a step failed."""


class DockerfileSyntaxError(BuildError):
    def __init__(self, filename: str, line: int, message: str):
        super().__init__(f"{filename}:{line}: {message}")
        self.filename = filename
        self.line = line
