"""The few URL operations the registry client needs, without ``urllib.parse``.

``urllib.parse`` imports ``ipaddress`` (and with it ~3 ms) in every pull and push; the
registry client only splits its own URLs, resolves ``Location`` headers, and encodes
query strings.  These functions behave as ``urllib.parse``'s of the same names do on
such URLs (tests/unit/test_urls.py compares them on generated ones).
"""

from __future__ import annotations

from pbox.record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


@record(frozen=True)
class SplitURL:
    scheme: str
    netloc: str
    path: str
    query: str
    fragment: str

    @property
    def _hostinfo(self) -> tuple[str, str]:
        hostport = self.netloc.rpartition("@")[2]
        _, bracket, bracketed = hostport.partition("[")
        if bracket:
            host, _, port = bracketed.partition("]")
            return host, port.partition(":")[2]
        host, _, port = hostport.partition(":")
        return host, port

    @property
    def hostname(self) -> str | None:
        host = self._hostinfo[0]
        if not host:
            return None
        host, percent, zone = host.partition("%")
        return host.lower() + percent + zone

    @property
    def port(self) -> int | None:
        port = self._hostinfo[1]
        if not port:
            return None
        if not port.isascii() or not port.isdigit():
            raise ValueError(f"Port could not be cast to integer value as {port!r}")
        if not 0 <= int(port) <= 65535:
            raise ValueError("Port out of range 0-65535")
        return int(port)

    @property
    def username(self) -> str | None:
        userinfo, at, _ = self.netloc.rpartition("@")
        return userinfo.partition(":")[0] if at else None

    @property
    def password(self) -> str | None:
        userinfo, at, _ = self.netloc.rpartition("@")
        if not at:
            return None
        _, colon, password = userinfo.partition(":")
        return password if colon else None


def split(url: str) -> SplitURL:
    """``scheme://netloc/path?query#fragment`` (``urllib.parse.urlsplit``)."""
    url = url.lstrip(_C0_OR_SPACE).replace("\t", "").replace("\r", "").replace("\n", "")
    scheme = ""
    colon = url.find(":")
    if colon > 0 and url[0].isascii() and url[0].isalpha() and \
            all(c in _SCHEME_CHARS for c in url[:colon]):
        scheme, url = url[:colon].lower(), url[colon + 1 :]
    netloc = ""
    if url[:2] == "//":
        end = len(url)
        for c in "/?#":
            i = url.find(c, 2)
            if 0 <= i < end:
                end = i
        netloc, url = url[2:end], url[end:]
        if ("[" in netloc) != ("]" in netloc):
            raise ValueError("Invalid IPv6 URL")
        if "[" in netloc:
            _check_bracketed(netloc)
    url, _, fragment = url.partition("#")
    path, _, query = url.partition("?")
    return SplitURL(scheme, netloc, path, query, fragment)


def _check_bracketed(netloc: str) -> None:
    """Nothing before ``[``, only a port after ``]``, an IPv6 address between (by its
    characters: ``ipaddress``, which checks it fully, is what this module avoids)."""
    before, _, bracketed = netloc.rpartition("@")[2].partition("[")
    host, _, after = bracketed.partition("]")
    if before or (after and not after.startswith(":")) or ":" not in host or \
            not set(host) <= _IPV6_CHARS:
        raise ValueError("Invalid IPv6 URL")


def unsplit(parts: Iterable[str]) -> str:
    scheme, netloc, path, query, fragment = parts
    url = path
    if netloc or (scheme and path[:2] != "//" and scheme in ("http", "https")):
        if url and url[:1] != "/":
            url = "/" + url
        url = "//" + netloc + url
    if scheme:
        url = scheme + ":" + url
    if query:
        url += "?" + query
    if fragment:
        url += "#" + fragment
    return url


def join(base: str, ref: str) -> str:
    """Resolve ``ref`` (a ``Location`` header) against ``base`` as ``urljoin`` does."""
    if not base:
        return ref
    if not ref:
        return base
    b = split(base)
    r = split(ref)
    scheme = r.scheme or b.scheme
    if scheme != b.scheme or scheme not in ("http", "https", ""):
        return ref
    if r.netloc:
        return unsplit((scheme, r.netloc, r.path, r.query, r.fragment))
    if not r.path:
        return unsplit((scheme, b.netloc, b.path, r.query or b.query, r.fragment))
    base_parts = b.path.split("/")
    if base_parts[-1] != "":
        del base_parts[-1]
    if r.path[:1] == "/":
        segments = r.path.split("/")
    else:
        segments = base_parts + r.path.split("/")
        segments[1:-1] = [seg for seg in segments[1:-1] if seg]
    resolved: list[str] = []
    for seg in segments:
        if seg == "..":
            if resolved:
                resolved.pop()
        elif seg != ".":
            resolved.append(seg)
    if segments[-1] in (".", ".."):
        resolved.append("")
    return unsplit((scheme, b.netloc, "/".join(resolved) or "/", r.query, r.fragment))


def quote(s: str, safe: str = "/") -> str:
    """Percent-encode ``s`` (UTF-8) except unreserved characters and ``safe``."""
    keep = _UNRESERVED | frozenset(safe.encode("ascii"))
    data = s.encode("utf-8")
    if all(b in keep for b in data):
        return s
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in data)


def quote_plus(s: str) -> str:
    return quote(s, " ").replace(" ", "+") if " " in s else quote(s, "")


def encode(query: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """``k=v&...`` with ``+`` for spaces (``urllib.parse.urlencode``)."""
    pairs = query.items() if hasattr(query, "items") else query
    return "&".join(f"{quote_plus(str(k))}={quote_plus(str(v))}" for k, v in pairs)


def unquote(s: str) -> str:
    if "%" not in s:
        return s
    return unquote_to_bytes(s).decode("utf-8", "replace")


def unquote_to_bytes(s: str | bytes) -> bytes:
    data = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    parts = data.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 2 and all(c in _HEXDIGITS for c in part[:2]):
            out.append(int(part[:2], 16))
            out += part[2:]
        else:
            out += b"%" + part
    return bytes(out)


def parse_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``."""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        k, _, v = item.partition("=")
        pairs.append((unquote(k.replace("+", " ")), unquote(v.replace("+", " "))))
    return pairs
