"""Distribution use cases: log in to a registry, log out, push an image.

Nothing here prints: ``push`` reports progress to a ``report(event, **info)`` callback
that the CLI renders (docker's ``<id>: Pushed`` lines).

Push, per layer (all layers at once, in a few threads):

1. The compressed blob for the asked compression is remembered in the layer's
   ``layer.json`` under ``compressed_by``: ``{"gzip": {"digest", "size", "diff_id"}}``.
   ``HEAD`` it: the registry has it -> ``Layer already exists``.  The digest a pulled
   layer came with (``compressed`` in ``layer.json``) is tried too, so pushing a
   pulled image back to its registry sends nothing.
2. A cross-repository mount from a repository of the same registry known to hold the
   blob (``locations``: ``{digest: ["registry/repo", ...]}`` in ``layer.json``, which
   push fills and pull may fill) -> ``Mounted from REPO``.
3. Otherwise the stored layer directory is written as a deterministic tar
   (``write_layer_tar``) and compressed (gzip: ``pbox.oci.pgzip``, blocks on all
   cores) while it is uploaded (``_stream_layer``: docker's stream upload, the digest
   given at the end), and the result is remembered once the registry has it, so a
   second push, or a push elsewhere, does not compress again and yields the same
   digests -> ``Pushed``.  Should the streamed upload fail in a way a retry may mend,
   the layer is compressed into a temp file of the store and uploaded from there.

A pulled (or loaded) layer is written back byte for byte from its tar-split file
(``storage/tarsplit``), so it keeps its diff id.  Without one (a store from before
tar-split, or files changed since) it is serialised again; its tar bytes may differ
from the original ones, hence its diff id.  The config's ``rootfs.diff_ids`` must name
what the pushed blobs decompress to, so in that case the pushed config is the stored
one with those ids replaced (its digest, the pushed image's id, differs from the local
id).  Layers written by pbox (build, commit) keep their diff ids and the stored config
bytes are pushed unchanged.

Before any of that, when every layer has a remembered blob of known size (a second
push of the same image), the manifest those blobs make is built locally and the tag is
asked for with one ``HEAD``: when the registry already has exactly that manifest under
the tag, it has every blob too (a registry accepts a manifest only once its blobs are
there), so nothing is sent and no blob is asked for, and the output is docker's for a
push that found every layer.  Only then, when layers may have to be compressed, does
push join the user's namespace (``pbox.rootless.pause``), which reading a layer's
files with their owners needs.

Manifest format: ``--format`` wins; by default docker v2s2 when the image came as a
docker v2s2 manifest, OCI otherwise (and always OCI for zstd layers, which docker
v2s2 cannot describe).
"""

from __future__ import annotations

import _thread  # the locks; threading (~1 ms) only when an upload streams
import os

from pbox import jsonio as json
from pbox.config import Config
from pbox.errors import AuthError, NotFound, PboxError, RegistryError, UsageError
from pbox.lazylog import get_logger
from pbox.oci import reference as refs
from pbox.record import factory, record

log = get_logger(__name__)

FORMATS = ("oci", "v2s2")
COMPRESSIONS = ("gzip", "zstd")
MAX_LOCATIONS = 8  # repositories remembered per blob, for cross-repository mounts
PUSH_THREADS = 4  # layers checked, mounted or uploaded at once
# layer.json updates of one process, one at a time (the store's FileLock is per process)
_REMEMBER_LOCK = _thread.allocate_lock()


# -- login / logout ------------------------------------------------------------------------


def registry_of(text: str | None) -> tuple[str, str]:
    """(registry host, auth-file key) of what the user typed after ``login``.

    ``https://index.docker.io/v1/`` and ``docker.io`` are Docker Hub; a repository
    prefix (``quay.io/team``) keeps its path in the key, as containers' auth files do.
    """
    from pbox.oci.auth import normalize_key

    if not text or not text.strip():
        return refs.DEFAULT_REGISTRY, refs.DEFAULT_REGISTRY
    key = normalize_key(text.strip())
    host = key.split("/", 1)[0]
    if not refs.is_valid_registry(host) and host != refs.DEFAULT_REGISTRY:
        raise UsageError(f"invalid registry {text!r}")
    return host, key


def auth_file(config: Config, authfile: str | None = None) -> str:
    from pbox.oci.auth import default_auth_file

    return authfile or default_auth_file(config.config_dir)


def check_credentials(
    config: Config,
    registry: str,
    username: str,
    password: str,
    *,
    tls_verify: bool | None = None,
    cert_dir: str | None = None,
) -> None:
    """Ask the registry whether ``username``/``password`` are good; ``AuthError`` if not.

    ``GET /v2/`` tells which scheme the registry wants; with a bearer challenge the
    credentials go to the token server (a wrong password is refused there), with a
    basic challenge they go with a second ``GET /v2/``.  A registry without auth
    accepts anything (docker says "Login Succeeded" too).
    """
    from pbox.oci.auth import Credentials
    from pbox.oci.registry import RegistryClient

    creds = Credentials(username, password, source="login")
    if _conf_insecure(config, registry):
        tls_verify = False
    with RegistryClient(registry, tls_verify=tls_verify is not False, cert_dir=cert_dir,
                        config_dir=config.config_dir, credentials=creds) as client:
        if client.ping() is None:
            return
        resp = client._request("GET", "/v2/", scopes=[], what=client.registry)
        if resp.status_code != 200:
            err = client._error(resp, what=client.registry)
            if isinstance(err, AuthError) and err.status == 401:
                raise AuthError(
                    f"unauthorized: incorrect username or password for {client.registry}",
                    status=401, code=err.code,
                )
            raise err
        resp.close()


def login(
    config: Config,
    registry: str | None,
    username: str,
    password: str,
    *,
    tls_verify: bool | None = None,
    cert_dir: str | None = None,
    authfile: str | None = None,
) -> str:
    """Verify the credentials, then save them (0600); returns the file written."""
    from pbox.oci import auth

    host, key = registry_of(registry)
    if not username:
        raise UsageError("a user name is required")
    if ":" in username:
        raise UsageError("a user name may not contain ':'")
    if not password:
        raise UsageError("a password is required")
    check_credentials(config, host, username, password, tls_verify=tls_verify,
                      cert_dir=cert_dir)
    path = auth_file(config, authfile)
    helper = auth.configured_helper(_auth_paths(config, authfile), host)
    if helper:
        auth.helper_store(helper, host, username, password)
        return f"docker-credential-{helper}"
    auth.store(path, key, username, password)
    return path


def _conf_insecure(config: Config, registry: str) -> bool:
    """registries.conf marks ``registry`` insecure (a blocked one is refused)."""
    from pbox import images

    path = images.registries_conf_path(config)
    if not os.path.exists(path):
        return False
    from pbox import registries

    conf = registries.load(config.config_dir)
    entry = conf.find(refs.normalize_registry(registry))
    if entry is not None and entry.blocked:
        raise PboxError(f"registry {registry} is blocked in registries.conf")
    return bool(entry and entry.insecure)


def _auth_paths(config: Config, authfile: str | None) -> list[str]:
    from pbox.oci import auth

    return auth.auth_file_paths(config.config_dir, authfile=authfile)


def logout(config: Config, registry: str | None, *, authfile: str | None = None) -> str:
    """Remove the saved credentials of ``registry``; returns the name removed."""
    from pbox.oci import auth

    host, key = registry_of(registry)
    path = auth_file(config, authfile)
    helper = auth.configured_helper(_auth_paths(config, authfile), host)
    if helper:
        if auth.helper_erase(helper, host):
            auth.erase(path, key)
            return key
        if auth.erase(path, key):
            return key
        raise NotFound(f"not logged in to {key}")
    if auth.erase(path, key):
        return key
    where = ""
    if authfile is None:
        for other in auth.auth_file_paths(config.config_dir)[1:]:
            if auth.lookup_in_file(other, host) is not None:
                where = f" (credentials for it are in {other}, which pbox does not change)"
                break
    raise NotFound(f"not logged in to {key}{where}")


def get_login(config: Config, registry: str | None, *, authfile: str | None = None) -> str:
    """The user name saved for ``registry`` (any of the credential files)."""
    from pbox.oci import auth

    host, key = registry_of(registry)
    repo = key.split("/", 1)[1] if "/" in key else None
    creds = auth.lookup(host, repo, config_dir=config.config_dir, authfile=authfile)
    if creds is None or not creds.username:
        raise NotFound(f"not logged in to {key}")
    return creds.username


# -- push ----------------------------------------------------------------------------------


@record
class PushOptions:
    tls_verify: bool | None = None
    cert_dir: str | None = None
    creds: str | None = None  # "user:password"
    compression: str = "gzip"
    format: str | None = None  # "oci", "v2s2" or None (see the module doc)


@record
class PushedLayer:
    digest: str
    size: int
    diff_id: str
    status: str  # "exists", "mounted", "pushed"
    source: str = ""  # the repository it was mounted from


@record
class PushResult:
    reference: refs.Reference
    digest: str
    size: int
    media_type: str
    config_digest: str
    layers: list = factory(list)


def _parse_creds(text: str | None):
    if not text:
        return None
    from pbox.oci.auth import Credentials

    user, sep, password = text.partition(":")
    if not sep or not user:
        raise UsageError("--creds must be USERNAME:PASSWORD")
    return Credentials(user, password, source="--creds")


def _manifest_types(fmt: str, algo: str) -> tuple[str, str, str]:
    """(manifest, config, layer) media types."""
    from pbox.oci import mediatypes as mt

    if fmt == "v2s2":
        if algo == "zstd":
            raise UsageError("docker v2s2 manifests cannot hold zstd layers; use --format oci")
        return mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, mt.DOCKER_LAYER_GZIP
    return mt.OCI_MANIFEST, mt.OCI_CONFIG, (mt.OCI_LAYER_ZSTD if algo == "zstd"
                                            else mt.OCI_LAYER_GZIP)


def choose_format(requested: str | None, stored_media_type: str, algo: str) -> str:
    from pbox.oci import mediatypes as mt

    if requested:
        if requested not in FORMATS:
            raise UsageError(f"unknown manifest format {requested!r} (use oci or v2s2)")
        return requested
    if algo == "gzip" and mt.base(stored_media_type) == mt.DOCKER_MANIFEST:
        return "v2s2"
    return "oci"


def push(config: Config, source: str, dest: str | None = None,
         opts: PushOptions | None = None, report=None, notice=None) -> PushResult:
    """Upload a local image: its layers, its config, then its manifest by tag."""
    from pbox import images
    from pbox.oci import registry as reg
    from pbox.storage.images import ImageStore

    opts = opts or PushOptions()
    report = report or (lambda *a, **k: None)
    algo = opts.compression or "gzip"
    if algo not in COMPRESSIONS:
        raise UsageError(f"unsupported compression format {algo!r} (use gzip or zstd)")
    store = images.open_store(config, create=False)
    if not store.exists:
        raise NotFound(f"No such image: {source}")
    istore = ImageStore(store)
    res = images.resolve(istore, source)
    if dest:
        ref = refs.parse(dest)
    elif res.ref is not None:
        ref = res.ref
    else:
        raise UsageError(f"{source} is an image id: name the destination (push ID REGISTRY/NAME:TAG)")
    if ref.digest:
        raise UsageError(f"{ref.familiar()}: cannot push to a digest; give a tag")
    record = res.record
    fmt = choose_format(opts.format, record.manifest_media_type, algo)
    manifest_type, config_type, layer_type = _manifest_types(fmt, algo)
    target, repo, insecure = ref.registry, ref.repository, False
    conf_path = images.registries_conf_path(config)
    if os.path.exists(conf_path):
        from pbox import registries

        conf = registries.load(config.config_dir)
        # push goes to the registry itself (never a mirror); blocked ones are refused
        src = registries.sources(conf, ref, pull=False)[-1]
        target, repo, insecure = src.registry, src.repository, src.insecure
    client = reg.client_for(target, config_dir=config.config_dir, repository=repo,
                            tls_verify=opts.tls_verify is not False and not insecure,
                            cert_dir=opts.cert_dir, credentials=_parse_creds(opts.creds))
    here = f"{client.registry}/{repo}"
    report("start", repository=here)
    tag = ref.tag or refs.DEFAULT_TAG
    types = (manifest_type, config_type, layer_type)
    with client, store.gc_lock.shared():
        # each layer's record and the config, read once for the two ways below
        layers = [(chain, diff_id, store.layer_info(chain))
                  for chain, diff_id in zip(record.layers, record.diff_ids)]
        stored_config = store.read_blob(record.id)
        done = _unchanged(client, record, stored_config, layers, repo, tag, algo, types,
                          report)
        if done is None:
            # from here on a layer may have to be read: with its files' owners, from the
            # user's namespace, joined while this process has no other thread
            keep_owners = images.enter_userns(config, notice)
            store.clean_temp()
            done = _upload(client, store, record, stored_config, layers, repo, tag, algo,
                           types, keep_owners, report)
        digest, manifest, config_digest, pushed = done
        if config_digest == record.id:
            istore.set_digest(ref.with_digest(digest).string(), record.id)
    report("digest", tag=tag, digest=digest, size=len(manifest.raw))
    return PushResult(ref, digest, len(manifest.raw), manifest_type, config_digest, pushed)


def _upload(client, store, record, stored_config: bytes, layers: list, repo: str, tag: str,
            algo: str, types: tuple, keep_owners: bool, report) -> tuple:
    """Push's steps 1-3 for every layer (``layers``: chain id, diff id, layer record),
    then the config and the manifest: (manifest digest, manifest, config digest,
    layers pushed)."""
    manifest_type = types[0]
    client.ping()  # once, before the layers' threads ask for it
    known = [(chain, info, _known_blobs(info, diff_id, algo))
             for chain, diff_id, info in layers]
    early = None
    if any(not blobs for _, _, blobs in known):
        # A layer never pushed: the image is new to the registry, its config too.  The
        # stored config goes up next to the layers; should the layers' tars come out
        # other than its diff ids say, the one naming theirs follows below.
        def early() -> None:
            _push_config(client, repo, record.id, stored_config, [])
    pushed = _push_layers(client, store, repo, known, algo, keep_owners, report, early)
    config_raw, config_digest = _config_for(record, stored_config,
                                            [p.diff_id for p in pushed])
    if early is None or config_digest != record.id:
        _push_config(client, repo, config_digest, config_raw, pushed)
    manifest = _manifest_of(types, config_digest, len(config_raw),
                            [(p.digest, p.size) for p in pushed])
    digest = client.put_manifest(repo, tag, manifest.raw, manifest_type)
    return digest, manifest, config_digest, pushed


def _push_config(client, repo: str, digest: str, raw: bytes, pushed: list) -> None:
    """The config blob, unless the registry has it: mounted from where the layers
    were mounted from when none had to be uploaded, else uploaded."""
    if client.blob_exists(repo, digest):
        return
    sources = [p.source for p in pushed if p.source]
    if any(p.status == "pushed" for p in pushed):
        sources = []  # the image is new to the registry
    if not any(client.mount_blob(repo, digest, s) for s in sources[:1]):
        client.push_blob(repo, digest, len(raw), lambda: _bytes_io(raw), check_exists=False)


def _config_for(record, stored: bytes, diff_ids: list[str]) -> tuple[bytes, str]:
    """(the config to push, its digest): the stored one, or, when the pushed blobs
    decompress to other tars than the stored diff ids say, one naming theirs."""
    from pbox.oci import digest as dg

    if list(diff_ids) != list(record.diff_ids):
        config_raw = _with_diff_ids(stored, diff_ids)
        log.debug("pushing a config with re-serialised layers' diff ids")
        return config_raw, dg.compute(config_raw)
    return stored, record.id


def _manifest_of(types: tuple[str, str, str], config_digest: str, config_size: int,
                 layers: list[tuple[str, int]]):
    from pbox.oci import manifest as mf

    manifest_type, config_type, layer_type = types
    return mf.build_manifest(
        mf.Descriptor(config_type, config_digest, config_size),
        [mf.Descriptor(layer_type, d, size) for d, size in layers],
        media_type=manifest_type,
    )


def _unchanged(client, record, stored_config: bytes, layers: list, repo: str, tag: str,
               algo: str, types: tuple, report) -> tuple | None:
    """What ``_upload`` returns, when the registry has, under ``tag``, the very
    manifest the remembered blobs of every layer make (see the module doc); None when
    a layer has no such blob or the registry has something else."""
    blobs = []
    for _chain, diff_id, info in layers:
        known = [c for c in _known_blobs(info, diff_id, algo) if c[1]]
        if not known:
            return None
        blobs.append(known[0])
    config_raw, config_digest = _config_for(record, stored_config,
                                            [did for _, _, did in blobs])
    manifest = _manifest_of(types, config_digest, len(config_raw),
                            [(d, size) for d, size, _ in blobs])
    try:
        there = client.head_manifest(repo, tag, accept=[types[0]],
                                     scopes=client._push(repo))
    except RegistryError as e:  # (no digest in the answer...): the usual way decides
        log.debug("asking for %s:%s before pushing: %s", repo, tag, e)
        return None
    if there is None or there[0] != manifest.digest:
        return None
    for d, _, _ in blobs:
        report("layer-exists", layer=d)
    return (manifest.digest, manifest, config_digest,
            [PushedLayer(d, size, did, "exists") for d, size, did in blobs])


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


def _with_diff_ids(config_raw: bytes, diff_ids: list[str]) -> bytes:
    from pbox.oci.manifest import dumps

    obj = json.loads(config_raw)
    rootfs = obj.get("rootfs") if isinstance(obj.get("rootfs"), dict) else {}
    rootfs = dict(rootfs, type=rootfs.get("type", "layers"), diff_ids=list(diff_ids))
    obj["rootfs"] = rootfs
    return dumps(obj)


class _Compressed:
    """A compressed layer in a temp file of the store; discard() when done."""

    def __init__(self, entry, digest: str, size: int, diff_id: str):
        self.entry, self.digest, self.size, self.diff_id = entry, digest, size, diff_id

    def open(self):
        return open(self.entry.path, "rb")

    def discard(self) -> None:
        self.entry.discard()


class _HashTee:
    """Hashes what is written (the uncompressed tar: its diff id) and passes it on."""

    def __init__(self, out):
        from pbox.oci.digest import CANONICAL, new_hasher

        self._out = out
        self._h = new_hasher(CANONICAL)  # a library's, without hashlib (pbox.oci.digest)

    def write(self, b) -> int:
        self._h.update(b)
        self._out.write(b)
        return len(b)

    def flush(self) -> None:
        pass

    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()


def compress_layer(store, chain: str, algo: str | None, keep_owners: bool) -> _Compressed:
    """Tar -> compress -> temp file, hashing both sides, in one streamed pass."""
    entry = store.temp("push")
    try:
        with open(entry.path, "wb") as f:
            digest, size, diff_id = write_compressed(store, chain, algo, keep_owners, f)
            f.flush()
        return _Compressed(entry, digest, size, diff_id)
    except BaseException:
        entry.discard()
        raise


def write_compressed(store, chain: str, algo: str | None, keep_owners: bool,
                     out, *, hashed: bool = True) -> tuple:
    """The layer as a tar, compressed with ``algo`` (None: not at all), written to
    ``out``: (the blob's digest, its size, the tar's digest).  ``hashed=False`` (with
    an ``algo``): ``out`` hashes the blob itself, and the first two are None."""
    from pbox.oci.digest import HashingWriter
    from pbox.storage.layertar import write_layer_tar

    packed = HashingWriter(out) if hashed else out
    comp = _compressor(packed, algo)
    # uncompressed (save): the blob's digest is the diff id, hashed once
    tee = _HashTee(comp) if algo is not None else None
    try:
        # a pulled or loaded layer: its original tar (same diff id) when its
        # tar-split file is there and the files are unchanged
        write_layer_tar(store.layer_diff(chain), tee or comp,
                        owners="keep" if keep_owners else (0, 0),
                        split=store.layer_split(chain),
                        diff_id=store.layer_info(chain).get("diff_id"))
    except BaseException:
        try:
            comp.close()
        except PboxError:
            pass
        raise
    comp.close()
    if not hashed:
        return None, None, tee.digest()
    diff_id = tee.digest() if tee is not None else packed.digest()
    return packed.digest(), packed.size, diff_id


def _compressor(out, algo: str):
    """gzip: blocks compressed on all cores, incompressible blocks stored
    (``pbox.oci.pgzip``); zstd: ``pbox.oci.compression``'s writer."""
    if algo == "gzip":
        from pbox.oci.pgzip import ParallelGzipWriter

        return ParallelGzipWriter(out)
    from pbox.oci import compression

    return compression.compressor(out, algo)


def _remember(store, chain: str, **changes) -> None:
    """Merge facts into layer.json (under the meta lock, so two pushes keep both)."""
    with _REMEMBER_LOCK, store.meta_lock.exclusive():
        info = store.layer_info(chain)
        for key, value in changes.items():
            merged = dict(info.get(key) or {})
            merged.update(value)
            info[key] = merged
        from pbox.storage.fsutil import atomic_write

        atomic_write(os.path.join(store.layer_path(chain), "layer.json"),
                     json.dumps(info, sort_keys=True).encode())


def _add_location(store, chain: str, digest: str, where: str, size: int = 0,
                  compressed_by: dict | None = None) -> None:
    """Remember that ``where`` (registry/repository) has the blob, and its size (which
    lets the next push of the image ask for its manifest alone); ``compressed_by``:
    the blob was made here (``{algo: {digest, size, diff_id}}``), written in the same
    update of layer.json."""
    info = store.layer_info(chain)
    places = list((info.get("locations") or {}).get(digest) or [])
    sizes = dict(info.get("blob_sizes") or {})
    for made in (info.get("compressed_by") or {}).values():
        if isinstance(made, dict) and made.get("digest"):
            sizes.setdefault(made["digest"], made.get("size"))
    sized = not size or sizes.get(digest) == size
    for made in (compressed_by or {}).values():
        # a pull of this blob from anywhere knows then that the store has its layer
        store.note_blob_diff(made["digest"], made["diff_id"])
    if where in places and sized and not compressed_by:
        return
    changes: dict = {"compressed_by": compressed_by} if compressed_by else {}
    if where not in places:
        changes["locations"] = {digest: ([where] + places)[:MAX_LOCATIONS]}
    if not sized:
        changes["blob_sizes"] = {digest: size}
    _remember(store, chain, **changes)


def _known_blobs(info: dict, diff_id: str, algo: str) -> list[tuple]:
    """The blobs a layer (its record ``info``) is known as in ``algo``: ``[(digest, size
    or None, diff id)]``, the one pbox compressed first, then the one it was pulled as."""
    from pbox.oci import mediatypes as mt

    known = (info.get("compressed_by") or {}).get(algo)
    candidates: list[tuple[str, int | None, str]] = []
    if known and known.get("digest") and known.get("diff_id"):
        candidates.append((known["digest"], int(known.get("size") or 0), known["diff_id"]))
    # the blob a pulled layer came as: the registry may have it already
    sizes = info.get("blob_sizes") or {}
    for d, media_type in (info.get("compressed") or {}).items():
        try:  # (compression.for_media_type, without importing that module)
            same = mt.layer_compression(media_type) == algo
        except KeyError:  # a type pbox cannot push as it is
            same = False
        if same and info.get("diff_id") == diff_id and all(d != c[0] for c in candidates):
            size = sizes.get(d)
            candidates.append((d, size if isinstance(size, int) else None, diff_id))
    return candidates


def _push_layers(client, store, repo: str, known: list, algo: str, keep_owners: bool,
                 report, also=None) -> list:
    """``_push_layer`` for every layer (``(chain id, layer record, known blobs)``),
    several at once (HEADs, mounts and uploads overlap), and ``also()`` next to them;
    the layers' results in layer order, the first failure raised."""
    if len(known) <= 1 and also is None:
        return [_push_layer(client, store, repo, chain, info, algo, keep_owners, report,
                            cands) for chain, info, cands in known]
    from pbox.threads import Pool

    lock = _thread.allocate_lock()

    def said(*args, **info):
        with lock:
            report(*args, **info)

    with Pool(min(PUSH_THREADS, len(known) + (also is not None)), "push-layer") as pool:
        futures = [pool.submit(_push_layer, client, store, repo, chain, info, algo,
                               keep_owners, said, cands) for chain, info, cands in known]
        extra = pool.submit(also) if also is not None else None
        results = [f.result() for f in futures]
        if extra is not None:
            extra.result()
        return results


def _push_layer(client, store, repo: str, chain: str, info: dict, algo: str,
                keep_owners: bool, report, candidates: list) -> PushedLayer:
    here = f"{client.registry}/{repo}"
    # 1. already there
    for d, size, did in candidates:
        got = client.stat_blob(repo, d)
        if got is not None:
            report("layer-exists", layer=d)
            _add_location(store, chain, d, here, size or got)
            return PushedLayer(d, size or got, did, "exists")
    # 2. mounted from a repository of the same registry (a pulled layer's original
    #    blob counts: pull records where it came from)
    for cand, csize, cdid in candidates:
        for place in (info.get("locations") or {}).get(cand) or []:
            reg_name, _, other = place.partition("/")
            if reg_name != client.registry or not other or other == repo:
                continue
            if client.mount_blob(repo, cand, other):
                report("layer-mounted", layer=cand, source=other)
                size_now = csize or client.stat_blob(repo, cand) or 0
                _add_location(store, chain, cand, here, size_now)
                return PushedLayer(cand, size_now, cdid, "mounted", other)
    # 3. uploaded, compressed while it is sent
    try:
        return _stream_layer(client, store, repo, chain, algo, keep_owners, report)
    except RegistryError as e:
        if not e.temporary:
            raise
        log.debug("streamed upload of layer %s failed (%s); compressing it first", chain, e)
    report("layer-preparing", layer=chain)
    made = compress_layer(store, chain, algo, keep_owners)
    try:
        report("layer-pushing", layer=made.digest, total=made.size)
        client.push_blob(repo, made.digest, made.size, made.open, check_exists=False)
        report("layer-pushed", layer=made.digest)
        _add_location(store, chain, made.digest, here, compressed_by={algo: {
            "digest": made.digest, "size": made.size, "diff_id": made.diff_id}})
        return PushedLayer(made.digest, made.size, made.diff_id, "pushed")
    finally:
        made.discard()


def _stream_layer(client, store, repo: str, chain: str, algo: str, keep_owners: bool,
                  report) -> PushedLayer:
    """Tar, compress and upload a layer in one pass (the upload in a thread, fed
    through a ``_Pipe``): compressing 10 MB and sending it overlap instead of taking
    turns, and no temp file is written.  The blob is remembered once the registry has
    it."""
    pipe = _Pipe()  # hashes the compressed bytes on the sending side
    failed: list = []

    def upload() -> None:
        try:
            client.push_blob_stream(repo, pipe, pipe.digest, f"layer {chain[:19]}")
        except BaseException as e:  # handed to the producer's thread below
            failed.append(e)
        finally:
            pipe.reader_done()

    report("layer-pushing", layer=chain)
    import threading

    sender = threading.Thread(target=upload, name="push-stream", daemon=True)
    sender.start()
    try:
        _, _, diff_id = write_compressed(store, chain, algo, keep_owners, pipe, hashed=False)
        pipe.finish()
    except BaseException as e:
        pipe.abort()
        sender.join()
        if failed and isinstance(e, _ReaderGone):
            raise failed[0] from None
        raise
    sender.join()
    if failed:
        raise failed[0]
    digest, size = pipe.digest(), pipe.size
    report("layer-pushed", layer=digest)
    _add_location(store, chain, digest, f"{client.registry}/{repo}", compressed_by={
        algo: {"digest": digest, "size": size, "diff_id": diff_id}})
    return PushedLayer(digest, size, diff_id, "pushed")


class _ReaderGone(PboxError):
    """The upload reading a ``_Pipe`` ended (it failed) before the writer did."""


class _PipeAborted(PboxError):
    """The writer of a ``_Pipe`` failed: the upload must not complete."""


_END = object()


class _Pipe:
    """Bytes written in one thread and iterated in another, a few blocks buffered;
    the reading side hashes and counts them (``digest()``, ``size``)."""

    DEPTH = 8  # writes in flight (pgzip writes 1 MiB pieces and small ends of blocks)

    def __init__(self):
        import queue

        from pbox.oci.digest import CANONICAL, new_hasher

        self._algorithm = CANONICAL
        self._hash = new_hasher(CANONICAL)
        self.size = 0
        self._queue = queue.Queue(self.DEPTH)
        self._full, self._empty = queue.Full, queue.Empty
        self._gone = False  # the reader stopped
        self._aborted = False  # the writer failed

    def _put(self, item) -> None:
        while True:
            if self._gone:
                raise _ReaderGone("the upload stopped")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except self._full:
                continue

    def write(self, b) -> int:
        self._put(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self._put(_END)

    def abort(self) -> None:
        """The writer failed: the reader raises instead of ending the body."""
        self._aborted = True

    def reader_done(self) -> None:
        self._gone = True

    def __iter__(self):
        while True:
            if self._aborted:
                raise _PipeAborted("the layer could not be read")
            try:
                item = self._queue.get(timeout=0.1)
            except self._empty:
                continue
            if item is _END:
                return
            self._hash.update(item)
            self.size += len(item)
            yield item

    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"
