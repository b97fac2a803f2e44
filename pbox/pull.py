"""Pulling an image: manifest (through an index by platform), config, and every layer
the store lacks, downloaded, inflated and extracted in one pass.

Glue between the registry client (``pbox.oci``), the store (``pbox.storage``) and the
user namespace (``pbox.images.enter_userns``).  Nothing here prints: progress goes to
a ``report(event, **info)`` callback that the CLI renders.
"""

from __future__ import annotations

import os
import time

from pbox.config import Config
from pbox.errors import DigestMismatch, ImageNotFound, PboxError
from pbox.lazylog import get_logger
from pbox.oci import reference as refs
from pbox.record import factory, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbox.storage.store import Store

log = get_logger(__name__)

# How many layers download at once (docker's default max-concurrent-downloads is 3).
PARALLEL_LAYERS = 3
# A layer blob up to this size is downloaded and inflated by one thread (a third
# thread downloading costs more than it overlaps), in smaller chunks.
SMALL_LAYER_BYTES = 4 << 20
# ... reading this much of the blob at a time.  A read of 1 MiB (a big layer's, where
# fewer calls matter) fills fresh pages, and each inflate call limited to a chunk's
# output leaves the rest of its input as a new copy (``unconsumed_tail``): busybox's
# pull took ~600 more page faults, of ~2 us each on a VM.  In 64 KiB reads the buffers
# are small and reused: -1.1 ms (paired median of 200); a Debian-sized layer
# took 40 ms more that way.
SMALL_LAYER_READ = 64 << 10


@record
class PullOptions:
    platform: str | None = None
    tls_verify: bool | None = None
    cert_dir: str | None = None
    creds: str | None = None  # "user:password" from --creds


@record
class PullResult:
    image_id: str
    reference: refs.Reference
    manifest_digest: str
    downloaded: bool
    layers: list = factory(list)


def _client_for(config: Config, ref: refs.Reference, opts: PullOptions, *,
                insecure: bool = False):
    from pbox.oci import auth
    from pbox.oci.registry import client_for

    credentials = None
    if opts.creds:
        user, sep, password = opts.creds.partition(":")
        if not sep or not user:
            raise PboxError("--creds must be USERNAME:PASSWORD")
        credentials = auth.Credentials(user, password, source="--creds")
    return client_for(ref.registry, config_dir=config.config_dir, repository=ref.repository,
                      tls_verify=opts.tls_verify is not False and not insecure,
                      cert_dir=opts.cert_dir, credentials=credentials)




def _resolve_with_conf(config: Config, conf, text: str, opts: PullOptions, report):
    """Try each candidate name (short-name search) and each of its sources (mirrors, then
    the registry); the first that has the manifest wins."""
    from pbox import registries
    from pbox.errors import RegistryError

    cands = registries.candidates(conf, text)
    last: Exception | None = None
    for ref in cands:
        for src in registries.sources(conf, ref):
            where = refs.Reference(src.registry, src.repository, ref.tag, ref.digest)
            client = _client_for(config, where, opts, insecure=src.insecure)
            report("resolving", ref=ref)
            try:
                return ref, client, src.repository, client.get_manifest(src.repository,
                                                                          ref.manifest_ref)
            except (RegistryError, ImageNotFound) as e:
                log.debug("%s from %s: %s", ref, src.registry, e)
                last = e
                client.close()
    if len(cands) == 1 and last is not None:
        raise last
    raise ImageNotFound(f"{text}: not found in any of the unqualified-search-registries "
                        f"({', '.join(conf.search)})" + (f": {last}" if last else ""))


def find_or_pull_image(config: Config, store: Store, name: str, policy: str, *,
                       platform: str | None = None, report=None, notice=None):
    """docker's --pull missing|always|never for `run`, `create` and build's FROM."""
    from pbox.errors import UsageError
    from pbox.images import image_store, resolve

    istore = image_store(store)
    if policy not in ("missing", "always", "never", "newer"):
        raise UsageError(f"invalid --pull policy {policy!r}: missing, always or never")
    if policy != "always":
        try:
            return resolve(istore, name)
        except ImageNotFound:
            if policy == "never":
                raise
            if report is not None:
                report("missing-locally", name=name)
    try:
        pull(config, name, PullOptions(platform=platform), report=report, notice=notice)
    finally:
        _release_freed_memory()  # this process goes on: a container's owner, a build
    return resolve(istore, name)


def pull(config: Config, text: str, opts: PullOptions | None = None, report=None,
         notice=None) -> PullResult:
    """Download ``text`` into the store: manifest (through an index by platform),
    config, and every layer not present yet, streamed and extracted in parallel."""
    opts = opts or PullOptions()
    report = report or (lambda *a, **k: None)
    conf = None
    if os.path.exists(config.registries_conf):
        from pbox import registries

        conf = registries.load(config.config_dir)
        registries.candidates(conf, text)  # a bad name fails before anything else
    else:
        ref = refs.parse(text)
    wanted = None  # the host's, unless --platform (checked before anything is sent)
    if opts.platform:
        from pbox.oci import platform as plat

        wanted = plat.parse(opts.platform)
    if os.getuid() != 0:
        from pbox.rootless import make_runroot

        # a run root that cannot be used is reported before any registry's trouble
        make_runroot(config.runroot)
    ready = []  # [(whether file owners are kept, store, image store)]

    def meanwhile() -> None:
        # While the manifest is on its way: join the user namespace (the store holds
        # files of subordinate ids; the process is still single-threaded, as joining
        # needs), open the store, import what the steps after the manifest need
        # (pbox.images too: ~0.2 ms less before the request).
        from pbox.images import enter_userns, image_store, open_store

        keep = enter_userns(config, notice)
        store = open_store(config)
        store.clean_temp()
        ready.append((keep, store, image_store(store)))
        _preload_manifest()

    if conf is None:
        client = _client_for(config, ref, opts)
        repo = ref.repository
        report("resolving", ref=ref)
        raw, media_type, digest = client.get_manifest(repo, ref.manifest_ref,
                                                      while_waiting=meanwhile)
    else:
        ref, client, repo, (raw, media_type, digest) = _resolve_with_conf(
            config, conf, text, opts, report)
    if not ready:  # the request was not sent as planned (a retry, several registries)
        meanwhile()
    keep_owners, store, istore = ready[0]
    from pbox.oci import manifest as mf

    parsed = mf.parse(raw, media_type)
    if isinstance(parsed, mf.Index):
        from pbox.oci import platform as plat

        desc = plat.select(parsed.manifests, wanted or plat.host(), what=ref.familiar())
        raw, media_type, digest = client.get_manifest(repo, desc.digest)
        parsed = mf.parse_manifest(raw, media_type)
    manifest = parsed
    from pbox.images import chain_ids

    with store.gc_lock.shared():
        ahead = None  # a layer asked for right behind the config
        early = None  # a layer fetched before the config: (descriptor, temp entry, record)
        try:
            if store.has_blob(manifest.config.digest):
                config_raw = store.read_blob(manifest.config.digest)
            else:
                media_types = [d.media_type for d in manifest.layers]
                # A one-layer image's layer and its config go out together, on one
                # connection (HTTP/1.1 pipelining), so that the registry need not wait
                # for pbox to read one and ask for the other.  A small layer (the pull
                # is mostly waiting) first: it is extracted while the registry prepares
                # the config, which is read and checked after it (diff id, name); a big
                # one behind the config, as usual.  Busybox from a local registry: -1.4
                # ms with the layer behind the config, -1.3 more with it first (of ~37).
                # Not when the store knows it has the layer (the same blob); when it
                # turns out to have it otherwise, the copy is dropped.
                one = manifest.layers[0] if len(manifest.layers) == 1 else None
                if one is not None and _layer_of_blob_stored(store, one.digest):
                    one = None
                if one is not None and one.size <= SMALL_LAYER_BYTES:
                    report("layer-waiting", layer=one.digest, total=one.size)
                    early = (one, *_fetch_layer(client, store, repo, one, None, keep_owners,
                                                report, notice, then=manifest.config.digest,
                                                alone=True))
                    config_wait = None
                else:
                    ahead = one

                    def config_wait():
                        if ahead is not None:  # what its answer, right behind, needs
                            _preload_layer(ahead.media_type)
                        else:
                            _preload_extraction(media_types)

                stream = client.fetch_blob(repo, manifest.config.digest,
                                           manifest.config.size, while_waiting=config_wait,
                                           then=ahead.digest if ahead else None)
                config_raw = stream.read()
                stream.finish()
                store.put_blob(config_raw, manifest.config.digest)
            image_config = mf.parse_config(config_raw)
            diff_ids = image_config.diff_ids
            if len(diff_ids) != len(manifest.layers):
                raise PboxError(
                    f"{ref.familiar()}: the manifest has {len(manifest.layers)} layers but "
                    f"the config lists {len(diff_ids)}"
                )
            chains = chain_ids(diff_ids)
            image_id = manifest.config.digest
            already = istore.exists(image_id)
            todo = []
            fetched = early is not None
            for desc, diff_id, chain in zip(manifest.layers, diff_ids, chains):
                if early is not None and desc is early[0]:
                    _, entry, record = early
                    early = None
                    _commit_layer(store, entry, desc, chain, "", record, report,
                                  expected=diff_id)
                elif store.has_layer(chain):
                    report("layer-exists", layer=desc.digest)
                else:
                    report("layer-waiting", layer=desc.digest, total=desc.size)
                    todo.append((desc, diff_id, chain))
        finally:
            if early is not None:  # the config's trouble: the layer goes too
                early[1].discard()
        if ahead is not None and all(d is not ahead for d, _, _ in todo):
            client.forget_blob(repo, ahead.digest)  # the store has it: answer dropped
        # (Asking for the config and the layers at once on separate connections, as
        # docker does, was slower: ~1-3 ms from a local registry on two cores.)
        _pull_layers(client, store, repo, todo, chains, keep_owners, report, notice)
        size = sum(store.layer_info(c).get("size", 0) for c in chains)
        store.put_blob(raw, digest)
        from pbox.storage.images import ImageRecord

        record = ImageRecord(
            id=image_id, layers=chains, diff_ids=diff_ids, manifest_digest=digest,
            manifest_media_type=media_type, created=image_config.created or "", size=size,
            added=istore.get(image_id).added if already else time.time(),
        )
        istore.put(record)
        names = []
        if ref.tag is not None and ref.digest is None:
            names.append(ref.string())
        # tags and the digest name in one update of the names' file (two fsyncs saved)
        old_id = istore.set_names(image_id, tags=names,
                                  digests=(ref.with_digest(digest).string(),))
    report("digest", digest=digest)
    return PullResult(image_id, ref, digest, downloaded=bool(todo) or fetched or not already
                      or old_id is not None, layers=[d.digest for d in manifest.layers])


# What a pull imports while the registry prepares an answer (``while_waiting``), not
# in a thread: two threads importing at once fight over the interpreter lock (a
# busybox pull took ~5 ms longer with a preloading thread).  Each imports what the
# steps after that answer need.


def _preload_manifest() -> None:
    """While the manifest comes: the manifest parser, and the platforms' module for an
    index."""
    import pbox.oci.manifest
    import pbox.oci.platform  # noqa: F401


def _preload_extraction(media_types: list) -> None:
    """While the config comes (hashed by CPython's own sha256, it is small): the
    extractor, and isal when a layer is gzip-compressed."""
    from pbox.oci import compression

    if any(compression.for_media_type(t) == compression.GZIP for t in media_types):
        compression.inflater_name()
    import pbox.storage.extract
    import pbox.storage.tarsplit  # noqa: F401


def _preload_layer(media_type: str, small_alone: bool = False) -> None:
    """While a layer's answer comes: freed chunk buffers set to be reused
    (``_keep_freed_memory``; ``small_alone``: the pull's only layer, a small one), the sha256
    library (~0.35 ms) to hash it, and what ``_preload_extraction`` imports, unless an
    earlier wait did."""
    _keep_freed_memory(small_alone)
    from pbox.oci import digest

    digest.preload()
    _preload_extraction([media_type])


def _layer_of_blob_stored(store: Store, blob: str) -> bool:
    """Whether the store holds the layer that ``blob`` inflates to, as the first layer of
    an image (its chain id is its diff id), as far as the store knows the blob."""
    diff_id = store.diff_of_blob(blob)
    return diff_id is not None and store.has_layer(diff_id)


def _pull_layers(client, store: Store, repo: str, todo, chains, keep_owners, report, notice):
    if not todo:
        return
    parent_of = {c: (chains[i - 1] if i else "") for i, c in enumerate(chains)}
    if len(todo) == 1:  # no pool for one layer (its stages have threads of their own)
        desc, diff_id, chain = todo[0]
        _pull_layer(client, store, repo, desc, diff_id, chain, parent_of[chain], keep_owners,
                    report, notice, alone=True)
        return
    from pbox.threads import Pool

    with Pool(min(PARALLEL_LAYERS, len(todo)), "pull-layer") as pool:
        futures = [pool.submit(_pull_layer, client, store, repo, desc, diff_id, chain,
                               parent_of[chain], keep_owners, report, notice)
                   for desc, diff_id, chain in todo]
        errors = []
        for f in futures:
            try:
                f.result()
            except BaseException as e:  # collect, then raise the first
                errors.append(e)
        if errors:
            raise errors[0]


class _Counter:
    """Counts bytes read through it and reports progress at most ~10 times a second."""

    def __init__(self, stream, report, layer, total):
        self.stream, self.report, self.layer, self.total = stream, report, layer, total
        self.count = 0
        self._last = 0.0

    def read(self, n=-1):
        data = self.stream.read(n)
        self.count += len(data)
        now = time.monotonic()
        if now - self._last > 0.1 or not data:
            self._last = now
            self.report("layer-downloading", layer=self.layer, current=self.count,
                        total=self.total)
        return data

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _pull_layer(client, store: Store, repo, desc, diff_id, chain, parent, keep_owners,
                report, notice, alone=False):
    entry, record = _fetch_layer(client, store, repo, desc, diff_id, keep_owners, report,
                                 notice, alone=alone)
    _commit_layer(store, entry, desc, chain, parent, record, report)


def _fetch_layer(client, store: Store, repo, desc, diff_id, keep_owners, report, notice, *,
                 then=None, alone=False):
    """Download and extract the layer ``desc`` into a new temp entry of the store: (the
    entry, its record but for the chain id and parent), for ``_commit_layer``.

    ``diff_id``: what the tar must hash to, checked at its end; None: the record's
    ``diff_id`` is what it hashed to, for the caller to check.  ``then``: see
    ``fetch_blob``.  What extracting needs is loaded while the answer comes.  ``alone``:
    no other layer is pulled meanwhile.
    """
    from pbox.oci.digest import HashingReader, VerifyingReader

    made = []  # [temp entry, LayerExtraction], made while the registry prepares its answer

    def prepare() -> None:
        _preload_layer(desc.media_type, alone and desc.size <= SMALL_LAYER_BYTES)
        from pbox.storage.extract import LayerExtraction
        from pbox.storage.store import LAYER_SPLIT

        entry = store.new_layer()
        made.append(entry)
        made.append(LayerExtraction(os.path.join(entry.path, "diff"),
                                    keep_owners=keep_owners, notice=notice,
                                    split_to=os.path.join(entry.path, LAYER_SPLIT)))

    try:
        # One pass: download (digest checked by the client's reader) -> decompress ->
        # diff id check -> extract.  Both checks need the streams read to their end.
        # A big layer has a thread per stage: one downloads and hashes the blob, one
        # inflates, this one extracts.  zlib, zstd and hashlib release the GIL on big
        # buffers, so both cores stay busy.  A small layer has one thread downloading
        # and inflating, in 256 KiB chunks (busybox's layer: 14.2 -> 10.5 ms in memory,
        # median of 40; a third thread cost more than it overlapped).
        # The temp entry and the extraction's set-up are made while the answer comes,
        # so the inflating thread starts ~0.3 ms sooner after it (busybox's pull -0.3 to
        # -0.6 ms in three paired runs of 300).
        packed = client.fetch_blob(repo, desc.digest, size=desc.size, then=then,
                                   while_waiting=prepare)
        if not made:  # not sent as planned: a retry, a ping first
            prepare()
        extraction = made[1]
        from pbox.oci import compression

        stages: list[_ReadAhead] = []  # consumer side first
        try:
            counted = _Counter(packed, report, desc.digest, desc.size)
            algo = compression.for_media_type(desc.media_type)
            big = desc.size > SMALL_LAYER_BYTES
            source = counted
            if algo is not None:
                if big:
                    stages.append(_ReadAhead(counted))
                    source = stages[0]
                source = (compression.decompress(source, algo) if big else
                          compression.decompress(source, algo, SMALL_LAYER_READ))
            # small: ~8 chunks, for this thread to start extracting early.  The blob's
            # sha256 is then taken here too, a chunk behind: the inflating thread is the
            # one that holds up a small pull (busybox: -0.9 ms without its hashing).
            on_chunk = None
            if not big and algo is not None:
                packed.defer()
                on_chunk = packed.catch_up
            stages.insert(0, _ReadAhead(source, chunk=1 << 20 if big else 256 << 10,
                                        on_chunk=on_chunk))
            source = stages[0]
            # The tar's digest (the diff id) is taken here, as the tar is read: with the
            # inflating thread hashing it instead (isal leaves it time to spare), a
            # Debian-sized pull took 498 against 456 ms (median of 10 alternating runs)
            # once extracting no longer chowned root's files nor CRCed with zlib.
            if diff_id is None:
                tar = HashingReader(source)
            else:
                tar = VerifyingReader(source, diff_id, what="uncompressed layer")
            report("layer-extracting", layer=desc.digest)
            try:
                stats = extraction.run(tar)
                tar.finish()  # to the end: the digest is checked there
            except Exception as e:
                _stop(stages)
                _blame_blob(packed, e)
                raise
            finally:
                _stop(stages)
            packed.finish()
        finally:
            packed.close()
        record = {"diff_id": diff_id or tar.digest(), "size": stats.bytes_written,
                  "compressed": {desc.digest: desc.media_type},
                  "blob_sizes": {desc.digest: desc.size},
                  # where the blob can be mounted from by a later push to this registry
                  "locations": {desc.digest: [f"{client.registry}/{repo}"]}}
    except BaseException:
        if len(made) == 2:
            made[1].close()
        if made:
            made[0].discard()
        raise
    return made[0], record


_MEMORY_KEPT = False


def _keep_freed_memory(small_alone: bool = False) -> None:
    """The chunks a layer streams through are reused once freed, not unmapped and
    mapped afresh (``syscalls.keep_freed_memory``): ~200 page faults fewer in a busybox
    pull, ~0.5 ms of the inflating thread.  ``small_alone``: the pull's only layer is a
    small one; its inflating thread then allocates from the main arena too, not a fresh
    one of its own (~100 page faults fewer, busybox -0.6 to -1.0 ms paired; a
    Debian-sized layer's three threads were 13 ms slower that way)."""
    global _MEMORY_KEPT
    if not _MEMORY_KEPT:
        try:
            from pbox.rootless.syscalls import keep_freed_memory
        except ImportError:  # a Python without ctypes: only slower
            return
        _MEMORY_KEPT = keep_freed_memory(one_arena=small_alone)


def _release_freed_memory() -> None:
    """Undo ``_keep_freed_memory`` in a process that goes on after its pull."""
    global _MEMORY_KEPT
    if _MEMORY_KEPT:
        _MEMORY_KEPT = False
        from pbox.rootless.syscalls import release_freed_memory

        release_freed_memory()


def _commit_layer(store: Store, entry, desc, chain, parent, record, report,
                  expected: str | None = None) -> None:
    """Give a layer from ``_fetch_layer`` its name in the store (when another pull has
    given that name first, its copy is dropped).  ``expected``: the diff id the config
    names, when the tar was hashed before the config was read."""
    try:
        if expected is not None and record["diff_id"] != expected:
            raise DigestMismatch(f"uncompressed layer digest mismatch: expected {expected}, "
                                 f"got {record['diff_id']}")
        record.update(chain_id=chain, parent=parent)
        store.commit_layer(entry, chain, record)
    except BaseException:
        entry.discard()
        raise
    store.note_blob_diff(desc.digest, record["diff_id"])
    report("layer-done", layer=desc.digest)


def _stop(stages) -> None:
    """Stop read-ahead threads, the consumer's first (it may wait on the next one)."""
    for stage in stages:
        stage.close()


class _ReadAhead:
    """Reads ``stream`` to its end in a thread, up to ``depth`` chunks ahead of the
    consumer.

    An error of the producer is raised by the consumer's next read; ``close()`` stops
    the producer and waits for it (so the stream is free for the caller again).  A read
    returns at most one chunk of the producer, without copying it when it is taken
    whole.  Built on ``_thread`` locks (``queue`` and ``threading`` cost ~2 ms to
    import, a fair part of a small pull).  ``on_chunk``: called by the consumer each
    time it takes a chunk (work moved off the producer, see ``_fetch_layer``)."""

    def __init__(self, stream, chunk: int = 1 << 20, depth: int = 4, on_chunk=None):
        import _thread

        self._chunk, self._depth = chunk, depth
        self._on_chunk = on_chunk
        self._items: list = []  # chunks, then None (the end) or an exception
        self._mu = _thread.allocate_lock()
        # each released once by the other side when this side waits for it
        self._wake_consumer = _thread.allocate_lock()
        self._wake_consumer.acquire()
        self._wake_producer = _thread.allocate_lock()
        self._wake_producer.acquire()
        self._consumer_waits = self._producer_waits = False
        self._stopped = False
        self._item = b""  # the chunk being consumed, from ``_off`` on
        self._off = 0
        self._done = False
        self._finished = _thread.allocate_lock()  # held while the producer runs
        self._finished.acquire()
        _thread.start_new_thread(self._produce, (stream,))

    def _put(self, item) -> bool:
        """Hand ``item`` over; False when the consumer has stopped."""
        while True:
            with self._mu:
                if self._stopped:
                    return False
                if len(self._items) < self._depth or item is None or \
                        isinstance(item, BaseException):
                    self._items.append(item)
                    if self._consumer_waits:
                        self._consumer_waits = False
                        self._wake_consumer.release()
                    return True
                self._producer_waits = True
            self._wake_producer.acquire()

    def _produce(self, stream) -> None:
        try:
            try:
                while True:
                    data = stream.read(self._chunk)
                    if not data:
                        break
                    if not self._put(data):
                        return
            except BaseException as e:  # handed to the consumer
                self._put(e)
                return
            self._put(None)
        finally:
            self._finished.release()

    def _get(self):
        while True:
            with self._mu:
                if self._items:
                    item = self._items.pop(0)
                    if self._producer_waits:
                        self._producer_waits = False
                        self._wake_producer.release()
                    return item
                self._consumer_waits = True
            self._wake_consumer.acquire()

    def read(self, n: int = -1) -> bytes:
        while self._off >= len(self._item) and not self._done:
            item = self._get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._item, self._off = item, 0
                if self._on_chunk is not None:
                    self._on_chunk()
        if n is None or n < 0:
            parts = [self.read(len(self._item))]
            while True:
                more = self.read(self._chunk)
                if not more:
                    return b"".join(parts)
                parts.append(more)
        item, off = self._item, self._off
        if off == 0 and n >= len(item):
            self._item = b""
            return item
        out = item[off : off + n]
        self._off = off + len(out)
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with self._mu:
            self._stopped = True
            if self._producer_waits:
                self._producer_waits = False
                self._wake_producer.release()
        with self._finished:  # the producer has returned
            pass


def _blame_blob(packed, error: Exception) -> None:
    """Wrong bytes from a registry usually break the decompressor or the tar reader
    before the blob's own digest can be checked.  Read the blob to its end: when it
    does not match its digest, that is the cause to report, not "invalid gzip data"."""
    from pbox.errors import DigestMismatch

    try:
        packed.finish()
    except DigestMismatch as mismatch:
        raise mismatch from error
    except Exception:  # the transport broke too: keep the first error
        pass
