"""JSON for the hot paths, without importing the ``json`` package.

``import json`` costs 4-6 ms of every command that reads a record: ``json.decoder``
imports ``re`` (and with it ``enum``) and compiles its patterns at import.  The work is
done by CPython's C accelerator ``_json`` either way, so this module sets up its scanner
and encoder directly, as ``json.JSONDecoder`` and ``json.JSONEncoder`` do with their
default settings, and gives the same results for the same calls.  Where ``_json`` is
missing (another Python), for indented output and for a document that is not JSON (the
error message), the ``json`` package does the work.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself imports re
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - every CPython has it
    _json = None

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _DecoderSettings:
    """What ``_json.make_scanner`` reads off a ``json.JSONDecoder``: the defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_DecoderSettings()) if _json is not None else None


def _raise_as_json(s: str) -> None:
    import json

    json.loads(s)  # raises json.JSONDecodeError (a ValueError) with its usual message
    raise ValueError("not a JSON document")  # pragma: no cover


def loads(s: str | bytes | bytearray) -> Any:
    """``json.loads(s)``."""
    if isinstance(s, (bytes, bytearray)):
        # what json.loads detects for pbox's own files; "utf-8-sig" would cost a codec import
        s = bytes(s[3:] if s[:3] == b"\xef\xbb\xbf" else s).decode("utf-8")
    if _scan is None:
        import json

        return json.loads(s)
    text = s.lstrip(_WHITESPACE)
    try:
        obj, end = _scan(text, 0)
    except StopIteration:
        _raise_as_json(s)
    if end != len(text) and text[end:].strip(_WHITESPACE):
        _raise_as_json(s)
    return obj


def load(f) -> Any:
    """``json.load(f)``."""
    return loads(f.read())


def _default(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def dumps(obj: Any, *, sort_keys: bool = False, indent: int | str | None = None,
          ensure_ascii: bool = True, separators: tuple[str, str] | None = None) -> str:
    """``json.dumps(obj, ...)`` for these keyword arguments."""
    if _json is None or indent is not None:
        import json

        return json.dumps(obj, sort_keys=sort_keys, indent=indent, ensure_ascii=ensure_ascii,
                          separators=separators)
    item_sep, key_sep = separators or (", ", ": ")
    encode = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    encoder = _json.make_encoder({}, _default, encode, None, key_sep, item_sep, sort_keys,
                                 False, True)
    return "".join(encoder(obj, 0))
