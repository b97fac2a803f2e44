"""The registry HTTP API v2 client: manifests, blobs, uploads, the catalog.

``RegistryClient`` adds the transfers to ``pbox.oci.regsession.RegistrySession``, which
settles the scheme, TLS and authentication and sends one request with its retries (the
protocol notes about those are there).  The HTTP client (``pbox.oci.transport``) is
imported inside the methods that talk to a registry, so importing this module costs
nothing for commands that never reach one.
"""

from __future__ import annotations

import io

from pbox.errors import DigestMismatch, RegistryError
from pbox.lazylog import get_logger
from pbox.oci import digest as _digest
from pbox.oci import mediatypes as mt
from pbox.oci import urls
from pbox.oci.auth import Credentials
from pbox.oci.regsession import (  # noqa: F401 (re-exported: the client's public names)
    RegistrySession,
    _short,
    api_host,
    display_registry,
    is_loopback,
    redact_url,
)

TYPE_CHECKING = False  # (importing typing costs ~2 ms of every registry command)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any, BinaryIO, Callable

log = get_logger(__name__)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # as containerd and containers/image
CHUNK = 1024 * 1024
DEFAULT_CHUNK_UPLOAD = 16 * 1024 * 1024


class RegistryClient(RegistrySession):
    """Talks to one registry.  Thread-safe: layers may be fetched in parallel.

    ``registry`` is the name from the reference (``docker.io``, ``127.0.0.1:5000``).
    ``tls_verify=False`` (or ``insecure=True``) skips certificate checks and allows
    plain HTTP.  ``cert_dir`` replaces the certs.d lookup (``--cert-dir``).
    """

    # -- names -----------------------------------------------------------------------------

    def _path(self, repo: str, *rest: str) -> str:
        return "/v2/" + repo + "/" + "/".join(urls.quote(r, safe=":@") for r in rest)

    def _what(self, repo: str, ref: str | None = None) -> str:
        name = f"{self.registry}/{repo}"
        if ref is None:
            return name
        return name + ("@" if ":" in ref and _digest.is_digest(ref) else ":") + ref

    @staticmethod
    def _pull(repo: str) -> list[str]:
        return [f"repository:{repo}:pull"]

    @staticmethod
    def _push(repo: str) -> list[str]:
        return [f"repository:{repo}:pull,push"]

    # -- manifests -------------------------------------------------------------------------

    def get_manifest(
        self, repo: str, ref: str, accept: Sequence[str] | None = None, *,
        while_waiting=None,
    ) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index, by tag or digest.

        A manifest fetched by digest is checked against it (``DigestMismatch``).
        Schema 1 is refused (``UnsupportedFormat``).  ``while_waiting``: see
        ``transport.Session.request``.
        """
        what = self._what(repo, ref)
        accept = list(accept or mt.ACCEPT_MANIFESTS)
        resp = self._request(
            "GET",
            self._path(repo, "manifests", ref),
            scopes=self._pull(repo),
            what=what,
            headers={"Accept": ", ".join(accept)},
            stream=True,
            while_waiting=while_waiting,
        )
        if resp.status_code != 200:
            raise self._error(resp, what=what, kind="manifest")
        from pbox.oci.manifest import detect_media_type  # (after the request: see pull)

        with resp:
            raw = _read_limited(resp, MAX_MANIFEST_SIZE, what)
            content_type = resp.headers.get("Content-Type")
            header_digest = resp.headers.get("Docker-Content-Digest")
        if _digest.is_digest(ref):
            # checked before parsing: corrupt content is a digest mismatch, not bad JSON
            got = _digest.compute(raw, _digest.algorithm_of(ref))
            if got != ref:
                raise DigestMismatch(
                    f"manifest digest mismatch for {what}: the registry sent content of "
                    f"digest {got}"
                )
            return raw, detect_media_type(raw, content_type), ref
        media_type = detect_media_type(raw, content_type)
        got = _digest.compute(raw)
        if header_digest and header_digest != got and header_digest.startswith("sha256:"):
            log.debug(
                "%s: Docker-Content-Digest %s differs from the content's %s",
                what,
                header_digest,
                got,
            )
        return raw, media_type, got

    def head_manifest(
        self, repo: str, ref: str, accept: Sequence[str] | None = None,
        scopes: list[str] | None = None,
    ) -> tuple[str, str, int] | None:
        """(digest, media type, size) from a HEAD, or None when the registry has no such tag.
        ``scopes``: the token's, when it is to serve a push afterwards too."""
        what = self._what(repo, ref)
        accept = list(accept or mt.ACCEPT_MANIFESTS)
        resp = self._request(
            "HEAD",
            self._path(repo, "manifests", ref),
            scopes=scopes or self._pull(repo),
            what=what,
            headers={"Accept": ", ".join(accept)},
        )
        if resp.status_code == 404:
            resp.close()
            return None
        if resp.status_code != 200:
            raise self._error(resp, what=what, kind="manifest")
        resp.close()
        d = resp.headers.get("Docker-Content-Digest") or ""
        size = int(resp.headers.get("Content-Length") or 0)
        if not _digest.is_digest(d):
            raise RegistryError(f"{what}: the registry sent no digest in the HEAD answer")
        return d, mt.base(resp.headers.get("Content-Type")), size

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        """Upload a manifest under a tag (or its digest); returns its digest."""
        what = self._what(repo, ref)
        resp = self._request(
            "PUT",
            self._path(repo, "manifests", ref),
            scopes=self._push(repo),
            what=what,
            headers={"Content-Type": media_type},
            data=bytes(raw),
        )
        if resp.status_code not in (200, 201, 202):
            raise self._error(resp, what=what)
        resp.close()
        got = _digest.compute(raw)
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != got:
            log.debug(
                "%s: registry reports digest %s for a manifest of digest %s", what, header, got
            )
        return got

    def delete_manifest(self, repo: str, digest: str) -> None:
        what = self._what(repo, digest)
        resp = self._request(
            "DELETE",
            self._path(repo, "manifests", digest),
            scopes=[f"repository:{repo}:delete"],
            what=what,
        )
        if resp.status_code not in (200, 202):
            raise self._error(resp, what=what, kind="manifest")
        resp.close()

    # -- blobs -------------------------------------------------------------------------------

    def stat_blob(self, repo: str, digest: str) -> int | None:
        """The size of a blob the registry has, or None."""
        what = self._what(repo, digest)
        resp = self._request(
            "HEAD", self._path(repo, "blobs", digest), scopes=self._pull(repo), what=what
        )
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._error(resp, what=what, kind="blob")
        try:
            return int(resp.headers.get("Content-Length") or 0)
        except ValueError:
            return 0

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.stat_blob(repo, digest) is not None

    def fetch_blob(
        self, repo: str, digest: str, size: int | None = None, *, while_waiting=None,
        then: str | None = None,
    ) -> _digest.VerifyingReader:
        """A stream of a blob, verified against ``digest`` (and ``size``) at its end.

        A connection that breaks in the middle of the body is resumed with a ``Range``
        request from the bytes already delivered.  Read to the end, or call ``finish()``.
        ``while_waiting``: see ``transport.Session.request``.  ``then``: the digest of a
        blob of ``repo`` to ask for right behind this one, on the same connection; a
        later ``fetch_blob`` of it takes that answer (``forget_blob`` gives it up).
        """
        _digest.validate(digest)
        if then is not None:
            _digest.validate(then)
        stream = _BlobStream(self, repo, digest, size)
        stream.open(0, while_waiting, then)
        return _digest.VerifyingReader(stream, digest, size, what=f"blob {self._what(repo)}")

    def forget_blob(self, repo: str, digest: str) -> None:
        """Give up the answer of a blob asked for with ``fetch_blob``'s ``then``."""
        self.forget(self._path(repo, "blobs", digest))

    def _get_blob_response(self, repo: str, digest: str, offset: int, while_waiting=None,
                           then: str | None = None):
        what = self._what(repo, digest)
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = self._request(
            "GET",
            self._path(repo, "blobs", digest),
            scopes=self._pull(repo),
            what=what,
            headers=headers,
            stream=True,
            while_waiting=while_waiting,
            then=None if then is None or offset else self._path(repo, "blobs", then),
        )
        if resp.status_code not in (200, 206):
            raise self._error(resp, what=what, kind="blob")
        return resp

    # -- uploads -------------------------------------------------------------------------------

    def _upload_url(self, resp, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{what}: the registry started an upload without a Location")
        return urls.join(resp.url, loc)

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        parts = urls.split(url)
        q = urls.parse_pairs(parts.query) + list(params.items())
        return urls.unsplit((parts.scheme, parts.netloc, parts.path, urls.encode(q), ""))

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Ask the registry to link a blob of ``from_repo`` into ``repo`` (no upload).

        False when it would not (the caller then uploads).
        """
        what = self._what(repo, digest)
        url = (
            self._path(repo, "blobs", "uploads", "")
            + "?"
            + urls.encode({"mount": digest, "from": from_repo})
        )
        resp = self._request(
            "POST", url, what=what, scopes=self._push(repo) + self._pull(from_repo), data=b""
        )
        if resp.status_code == 201:
            resp.close()
            return True
        if resp.status_code == 202:
            # an upload session was opened instead: cancel it, the caller will upload
            try:
                loc = self._upload_url(resp, what)
                resp.close()
                self._request(
                    "DELETE", loc, scopes=self._push(repo), what=what, retry=False
                ).close()
            except RegistryError:
                pass
            return False
        if resp.status_code in (401, 403, 404):
            resp.close()
            return False
        raise self._error(resp, what=what)

    def push_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        fileobj: BinaryIO | Callable[[], BinaryIO],
        *,
        check_exists: bool = True,
        chunk_size: int | None = None,
    ) -> bool:
        """Upload a blob; False when the registry had it already.

        ``fileobj`` is streamed (monolithic PUT), or sent in PATCH chunks when the
        registry asks for them (``OCI-Chunk-Min-Length``) or ``chunk_size`` is given.
        Pass a callable returning a fresh file to let a failed upload start over.
        """
        _digest.validate(digest)
        what = self._what(repo, digest)
        if check_exists and self.blob_exists(repo, digest):
            return False
        attempts = self.retries + 1 if callable(fileobj) else 1
        for attempt in range(attempts):
            f = fileobj() if callable(fileobj) else fileobj
            try:
                self._upload(repo, digest, size, f, what, chunk_size)
                return True
            except RegistryError as e:
                if not e.temporary or attempt + 1 >= attempts:
                    raise
                log.debug("upload of %s failed (%s); starting over", what, e)
                self._sleep(attempt)
            finally:
                if callable(fileobj):
                    f.close()
        return True  # pragma: no cover - the loop returns or raises

    def _upload(
        self, repo: str, digest: str, size: int, f: BinaryIO, what: str, chunk_size: int | None
    ) -> None:
        url, min_chunk = self._start_upload(repo, what)
        if min_chunk:
            chunk_size = max(min_chunk, chunk_size or DEFAULT_CHUNK_UPLOAD)
        if chunk_size:
            url = self._upload_chunks(repo, url, f, size, chunk_size, what)
            body: Any = b""
            length = 0
        else:
            body = _LimitedBody(f, size, what)
            length = size
        self._finish_upload(repo, url, digest, what, body, length)

    def _finish_upload(self, repo: str, url: str, digest: str, what: str, body: Any = b"",
                       length: int = 0) -> None:
        """The upload's closing ``PUT ?digest=`` (with the rest of the body, if any)."""
        resp = self._request(
            "PUT",
            self._with_query(url, digest=digest),
            scopes=self._push(repo),
            what=what,
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
            retry=False,
        )
        if resp.status_code not in (201, 204):
            raise self._error(resp, what=what, kind="blob")
        resp.close()

    def _start_upload(self, repo: str, what: str) -> tuple[str, int]:
        """POST a new upload session: (its URL, the chunk size the registry asks for
        with ``OCI-Chunk-Min-Length``, or 0)."""
        resp = self._request("POST", self._path(repo, "blobs", "uploads", ""),
                             scopes=self._push(repo), what=what, data=b"")
        if resp.status_code != 202:
            raise self._error(resp, what=what)
        url = self._upload_url(resp, what)
        min_chunk = resp.headers.get("OCI-Chunk-Min-Length") or ""
        resp.close()
        return url, int(min_chunk) if min_chunk.isdigit() else 0

    def push_blob_stream(self, repo: str, chunks: Iterable[bytes],
                         digest: Callable[[], str], what: str) -> None:
        """Upload a blob whose digest is known only once ``chunks`` is used up (a layer
        compressed while it is sent): one ``PATCH`` with a chunked body (docker's stream
        upload) or, when the registry asks for chunks of a minimum size, ``PATCH``es of
        that size; then the ``PUT`` with ``digest()``.  Not retried: the chunks cannot be
        sent twice (the caller may start over)."""
        what = self._what(repo) + f" ({what})"
        url, min_chunk = self._start_upload(repo, what)
        if min_chunk:
            url = self._upload_pieces(repo, url, chunks, max(min_chunk, DEFAULT_CHUNK_UPLOAD),
                                      what)
        else:
            resp = self._request("PATCH", url, scopes=self._push(repo), what=what,
                                 data=iter(chunks),
                                 headers={"Content-Type": "application/octet-stream"},
                                 retry=False)
            if resp.status_code not in (202, 204):
                raise self._error(resp, what=what)
            url = self._upload_url(resp, what)
            resp.close()
        self._finish_upload(repo, url, digest(), what)

    def _upload_pieces(self, repo: str, url: str, chunks: Iterable[bytes], size: int,
                       what: str) -> str:
        """``chunks`` as PATCHes of ``size`` bytes (the last one shorter)."""
        offset = 0
        buf = bytearray()
        it = iter(chunks)
        ended = False
        while not ended:
            for data in it:
                buf += data
                if len(buf) >= size:
                    break
            else:
                ended = True
            while len(buf) >= size or ended and buf:
                piece = bytes(buf[:size])
                del buf[:size]
                url = self._patch_piece(repo, url, piece, offset, what)
                offset += len(piece)
        return url

    def _patch_piece(self, repo: str, url: str, piece: bytes, offset: int, what: str) -> str:
        resp = self._request(
            "PATCH", url, scopes=self._push(repo), what=what, data=piece,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                     "Content-Length": str(len(piece))},
            retry=False,
        )
        if resp.status_code != 202:
            raise self._error(resp, what=what)
        url = self._upload_url(resp, what)
        resp.close()
        return url

    def _upload_chunks(
        self, repo: str, url: str, f: BinaryIO, size: int, chunk_size: int, what: str
    ) -> str:
        offset = 0
        while offset < size:
            n = min(chunk_size, size - offset)
            chunk = _read_exact(f, n)
            if len(chunk) != n:
                raise DigestMismatch(
                    f"{what}: the content ended after {offset + len(chunk)} of {size} bytes"
                )
            url = self._patch_piece(repo, url, chunk, offset, what)
            offset += n
        return url

    # -- listing ------------------------------------------------------------------------------

    def _paged(self, path: str, key: str, scopes: list[str], what: str) -> Iterator[str]:
        url: str | None = path
        seen = 0
        while url is not None and seen < 10000:
            seen += 1
            resp = self._request("GET", url, scopes=scopes, what=what)
            if resp.status_code != 200:
                raise self._error(resp, what=what)
            with resp:
                try:
                    obj = resp.json()
                except ValueError:
                    raise RegistryError(f"{what}: the registry answered something not JSON")
                link = resp.headers.get("Link")
            yield from (obj.get(key) or []) if isinstance(obj, dict) else []
            url = _next_link(link)

    def catalog(self, page_size: int = 1000) -> list[str]:
        """Every repository of the registry (``/v2/_catalog``, all pages)."""
        return list(
            self._paged(
                f"/v2/_catalog?n={page_size}",
                "repositories",
                ["registry:catalog:*"],
                f"{self.registry} catalog",
            )
        )

    def list_tags(self, repo: str, page_size: int = 1000) -> list[str]:
        return list(
            self._paged(
                f"/v2/{repo}/tags/list?n={page_size}", "tags", self._pull(repo), self._what(repo)
            )
        )



# -- helpers -------------------------------------------------------------------------------------


def _read_limited(resp, limit: int, what: str) -> bytes:
    parts = []
    got = 0
    for chunk in resp.iter_content(64 * 1024):
        got += len(chunk)
        if got > limit:
            raise RegistryError(f"{what}: manifest larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _next_link(link: str | None) -> str | None:
    """The target of ``Link: </v2/_catalog?last=x&n=100>; rel="next"``."""
    if not link:
        return None
    for part in link.split(","):
        part = part.strip()
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return part[start + 1 : end]
    return None


class _LimitedBody:
    """A file-like upload body of exactly ``size`` bytes, streamed by the transport."""

    def __init__(self, f: BinaryIO, size: int, what: str):
        self._f = f
        self._left = size
        self._size = size
        self._what = what

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n is None or n < 0 or n > self._left:
            n = self._left
        data = self._f.read(min(n, CHUNK))
        if not data:
            raise DigestMismatch(f"{self._what}: the content ended {self._left} bytes early")
        self._left -= len(data)
        return data


class _BlobStream(io.RawIOBase):
    """The body of a blob GET that resumes with ``Range`` when the connection breaks."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int | None):
        super().__init__()
        self._c = client
        self._repo = repo
        self._digest = digest
        self._size = size
        self._resp = None
        self._raw = None
        self._pos = 0
        self._skip = 0  # bytes to drop after a server ignored our Range
        self._resumes = 0
        self._total: int | None = size

    def readable(self) -> bool:
        return True

    def open(self, offset: int, while_waiting=None, then: str | None = None) -> None:
        resp = self._c._get_blob_response(self._repo, self._digest, offset, while_waiting,
                                          then)
        self._skip = 0
        if offset:
            if resp.status_code == 206:
                start = _content_range_start(resp.headers.get("Content-Range"))
                if start is not None and start != offset:
                    resp.close()
                    raise RegistryError(
                        f"{self._c._what(self._repo, self._digest)}: the registry resumed at "
                        f"byte {start} instead of {offset}",
                        temporary=True,
                    )
            else:  # 200: the whole blob again; drop what we already have
                self._skip = offset
        elif self._total is None:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and "Content-Encoding" not in resp.headers:
                self._total = int(length)
        self._resp = resp
        self._raw = resp

    def _resume(self, err: BaseException) -> None:
        what = self._c._what(self._repo, self._digest)
        if self._resumes >= self._c.resumes:
            raise RegistryError(
                f"{what}: the connection broke {self._resumes + 1} times while downloading "
                f"({_short(err)})",
                temporary=True,
            )
        self._resumes += 1
        log.debug("%s: connection broke at byte %d (%s); resuming", what, self._pos, _short(err))
        self._close_resp()
        if self._resumes > 1:
            self._c._sleep(self._resumes - 2)
        self.open(self._pos)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while True:
                chunk = self.read(CHUNK)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        if size == 0 or self._raw is None:
            return b""
        while True:
            try:
                data = self._raw.read(size)
            except Exception as e:  # transport errors: reset, timeout, body cut short...
                if not _is_transport_error(e):
                    raise
                self._resume(e)
                continue
            if not data:
                if self._total is not None and self._pos < self._total:
                    self._resume(EOFError(f"the body ended at byte {self._pos} of {self._total}"))
                    continue
                self._close_resp()
                return b""
            if self._skip:
                drop = min(self._skip, len(data))
                self._skip -= drop
                data = data[drop:]
                if not data:
                    continue
            self._pos += len(data)
            return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _close_resp(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp = None
        self._raw = None

    def close(self) -> None:
        if not self.closed:
            self._close_resp()
            super().close()


def _is_transport_error(e: BaseException) -> bool:
    from pbox.oci.transport import TransportError

    return isinstance(e, (TransportError, OSError, EOFError))


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value:
        return None
    try:
        unit, _, rng = value.strip().partition(" ")
        return int(rng.split("-", 1)[0])
    except ValueError:
        return None


def client_for(
    registry: str,
    *,
    config_dir: str | None = None,
    repository: str | None = None,
    tls_verify: bool = True,
    cert_dir: str | None = None,
    authfile: str | None = None,
    credentials: Credentials | None = None,
    user_agent: str | None = None,
) -> RegistryClient:
    """A client with the credentials of the auth files (unless ``credentials`` is given)."""
    if credentials is None:
        from pbox.oci import auth

        credentials = auth.lookup(registry, repository, config_dir=config_dir, authfile=authfile)
    return RegistryClient(
        registry,
        tls_verify=tls_verify,
        cert_dir=cert_dir,
        config_dir=config_dir,
        credentials=credentials,
        user_agent=user_agent,
    )
