"""TLS for registries: where a registry's CA certificates and client certificates are
(docker's and the containers tools' ``certs.d`` directories), and the SSL contexts made
from them, cached.  Imported only for an https registry (``ssl`` itself only when a
context is made): a plain-HTTP pull loads none of it."""

from __future__ import annotations

import _thread
import os

from pbox.errors import RegistryError
from pbox.lazylog import get_logger
from pbox.oci.reference import DEFAULT_REGISTRY, DOCKER_HUB_API
from pbox.record import record

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

log = get_logger(__name__)


def cert_dirs(registry: str, config_dir: str | None = None, home: str | None = None) -> list[str]:
    """Directories that may hold CAs and client certificates for ``registry``."""
    home = home or os.path.expanduser("~")
    names = [registry]
    if registry == DEFAULT_REGISTRY:
        names.append(DOCKER_HUB_API)
    dirs = []
    for name in names:
        if config_dir:
            dirs.append(os.path.join(config_dir, "certs.d", name))
        dirs.append(os.path.join(home, ".config", "containers", "certs.d", name))
        dirs.append(os.path.join("/etc/containers/certs.d", name))
        dirs.append(os.path.join("/etc/docker/certs.d", name))
    return dirs


@record
class TLSFiles:
    """What a certs.d directory holds: CA certificates and client cert/key pairs."""

    cas: list[str]
    client_pairs: list[tuple[str, str]]


def find_tls_files(dirs: Iterable[str]) -> TLSFiles:
    import glob

    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        cas.extend(sorted(glob.glob(os.path.join(d, "*.crt"))))
        for cert in sorted(glob.glob(os.path.join(d, "*.cert"))):
            key = cert[: -len(".cert")] + ".key"
            if not os.path.exists(key):
                raise RegistryError(f"client certificate {cert} has no matching key {key}")
            pairs.append((cert, key))
        for key in sorted(glob.glob(os.path.join(d, "*.key"))):
            if not os.path.exists(key[: -len(".key")] + ".cert"):
                raise RegistryError(f"client key {key} has no matching certificate (.cert)")
    return TLSFiles(cas, pairs)


_CONTEXTS: dict[tuple, Any] = {}
_CONTEXTS_LOCK = _thread.allocate_lock()


def ssl_context(verify: bool, files: TLSFiles):
    """An SSL context trusting the system's CAs (certifi's when there are none) and
    ``files.cas``; cached, as loading the system store takes tens of milliseconds."""
    import ssl

    key = (verify, tuple(files.cas), tuple(files.client_pairs))
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is not None:
            return ctx
        if verify:
            ctx = ssl.create_default_context()
            if not ctx.cert_store_stats().get("x509_ca") and not _has_ca_dir():
                # no system store found: certifi's bundle, when it is installed
                try:
                    import certifi

                    ctx.load_verify_locations(cafile=certifi.where())
                except (ImportError, OSError):
                    pass
            for ca in files.cas:
                try:
                    ctx.load_verify_locations(cafile=ca)
                except (OSError, ssl.SSLError) as e:
                    raise RegistryError(f"cannot load CA certificate {ca}: {e}")
                log.debug("trusting CA %s", ca)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for cert, key_file in files.client_pairs:
            try:
                ctx.load_cert_chain(cert, key_file)
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"cannot load client certificate {cert}: {e}")
            log.debug("using client certificate %s", cert)
        _CONTEXTS[key] = ctx
        return ctx


def _has_ca_dir() -> bool:
    """Whether OpenSSL's default CA directory holds certificates (loaded on demand, so
    not counted by ``cert_store_stats``)."""
    import ssl

    d = ssl.get_default_verify_paths().capath
    try:
        return bool(d) and any(True for _ in os.scandir(d))
    except OSError:
        return False
