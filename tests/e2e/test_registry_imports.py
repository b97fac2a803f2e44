"""`pbox pull`, `push` and `login` reach a registry without importing requests."""

from __future__ import annotations

import pytest
from harness import imported_modules

# what `requests` would bring along; the registry client has its own HTTP/1.1 client
HEAVY = ["requests", "urllib3", "idna", "charset_normalizer", "certifi"]


def _imported(pbox_cmd, pbox_root, *args, input=None) -> set[str]:
    return imported_modules(pbox_cmd, pbox_root.env_with(None), *args, input=input)


@pytest.mark.parametrize("mode", ["tls", "token"])
def test_pull_push_login_import_no_requests(request, mode, test_images, pbox_cmd, pbox_root):
    reg = request.getfixturevalue(f"registry_{mode}")
    img = test_images(reg).busybox
    flags = []
    if reg.ca_path:
        flags += ["--cert-dir", reg.cert_dir]
    creds = ["--creds", f"{reg.username}:{reg.password}"] if reg.username else []
    pulled = _imported(pbox_cmd, pbox_root, "pull", *flags, *creds, img.reference)
    assert "pbox.oci.transport" in pulled  # the measurement saw the registry client
    target = f"{reg.host}/imports-{mode}/busybox:pushed"
    _imported(pbox_cmd, pbox_root, "tag", img.reference, target)
    pushed = _imported(pbox_cmd, pbox_root, "push", *flags, *creds, target)
    assert "pbox.oci.transport" in pushed
    seen = [pulled, pushed]
    if reg.username:
        seen.append(_imported(pbox_cmd, pbox_root, "login", *flags, "-u", reg.username,
                              "--password-stdin", reg.host, input=reg.password + "\n"))
        assert "pbox.oci.transport" in seen[-1]
    for modules in seen:
        for name in HEAVY:
            assert name not in modules, name


def test_plain_http_pull_and_push_import_no_tls_nor_http_client(registry_plain, test_images,
                                                                  pbox_cmd, pbox_root):
    """pbox's own HTTP/1.1 client: a plain-HTTP registry costs no ``ssl`` (~15 ms to
    import) and no ``http.client`` / ``email`` (~10 ms more)."""
    img = test_images(registry_plain).busybox
    # the first command starts the user namespace's pause process (subprocess and all);
    # what is measured is a pull once it runs, as every later command finds it
    _imported(pbox_cmd, pbox_root, "pull", img.reference)
    _imported(pbox_cmd, pbox_root, "rmi", img.reference)
    pulled = _imported(pbox_cmd, pbox_root, "pull", img.reference)
    target = f"{registry_plain.host}/imports-plain/busybox:pushed"
    _imported(pbox_cmd, pbox_root, "tag", img.reference, target)
    pushed = _imported(pbox_cmd, pbox_root, "push", target)
    again = _imported(pbox_cmd, pbox_root, "push", target)
    for modules in (pulled, pushed, again):
        assert "pbox.oci.transport" in modules
        for name in ("ssl", "http.client", "email.parser", "click", "dataclasses"):
            assert name not in modules, name
    # a pull of a small layer and a push with nothing to send: one thread, and none of
    # the standard modules that cost milliseconds to import for a function or two
    for modules in (pulled, again):
        for name in ("re", "enum", "urllib.parse", "ipaddress", "socket", "selectors",
                     "threading", "base64", "signal", "typing", "queue", "hashlib",
                     "zipfile", "ctypes", "pbox.oci.tls"):
            assert name not in modules, name
    # nor a sha256 library to hash the few hundred bytes of a manifest
    assert "_hashlib" not in again and "pbox.oci.nativesha" not in again
    # a layer's hashes take a library's sha256 alone, not _hashlib's set-up of them all
    assert "pbox.oci.nativesha" in pulled and "_hashlib" not in pulled
    if pbox_cmd[1:2] != ["-m"]:  # (runpy, which `-m` goes through, imports them all)
        for name in ("contextlib", "collections", "functools"):
            assert name not in pulled, name


def test_a_push_that_uploads_hashes_without_hashlib(registry_plain, registry_factory,
                                                    test_images, pbox_cmd, pbox_root):
    """A pulled layer pushed to another registry is rebuilt from its tar-split and
    uploaded: its sha256 is a library's through pbox.oci.nativesha, not ``_hashlib``
    (which sets up every OpenSSL digest first, ~1.3 ms)."""
    img = test_images(registry_plain).busybox
    _imported(pbox_cmd, pbox_root, "pull", img.reference)
    other = registry_factory("plain")
    target = f"{other.host}/imports-upload/busybox:pushed"
    _imported(pbox_cmd, pbox_root, "tag", img.reference, target)
    pushed = _imported(pbox_cmd, pbox_root, "push", target)
    assert "pbox.storage.tarsplit" in pushed  # the layer was rebuilt and sent
    assert "pbox.oci.nativesha" in pushed
    assert "_hashlib" not in pushed and "hashlib" not in pushed
