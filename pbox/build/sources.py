"""COPY/ADD sources that are not files of the context or of an image: inline
heredoc documents (``COPY <<EOF /file``), ADD's remote URLs and git repositories.

Heredocs follow BuildKit: each ``<<NAME`` word is a file called NAME, mode 0664
(``--chmod`` overrides), its content with the stage's variables expanded unless the
delimiter was quoted (quotes in the content stay as written); ``<<-`` has already
stripped leading tabs in the parser.

A URL follows docker's ADD: the file is downloaded (through the environment's
proxies, as the registry client does), never extracted, mode 0600, mtime from the
``Last-Modified`` header; it is named after the last component of the URL path when
the destination is a directory.  ``--checksum=sha256:HEX`` is verified before the
file is used, and when given it is also the cache key, so a cached step does not
download again; without it the file is downloaded on every build and its digest
decides whether the step is cached.

A git repository (``ADD https://host/repo.git#REF[:SUBDIR] /dest``, ``git@host:repo``,
``git://``) is cloned with the ``git`` program (no prompt for credentials), checked
out at REF (a branch, a tag or a commit; default the remote's HEAD) and its tree, or
SUBDIR of it, is copied like a context directory, without ``.git`` unless
``--keep-git-dir``; the commit decides whether the step is cached.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil

from pbox.errors import BuildError

HEREDOC_WORD = re.compile(r"^\d*<<-?\S")
HEREDOC_MODE = 0o664
URL_MODE = 0o600
_CHUNK = 1 << 20


class Fetcher:
    """ADD's downloads and clones for one step, each once, in store temp directories
    removed by ``drop``."""

    def __init__(self, store):
        self.store = store
        self.done: dict = {}
        self.dirs: list = []

    def _dir(self) -> str:
        entry = self.store.temp("build")
        os.makedirs(entry.path)
        self.dirs.append(entry)
        return entry.path

    def url(self, url: str, checksum):
        if url not in self.done:
            self.done[url] = fetch(url, self._dir(), checksum)
        return self.done[url]

    def git(self, url: str, inst):
        if url not in self.done:
            keep = (inst.flag("keep-git-dir", "false") or "true").lower() == "true"
            self.done[url] = git_checkout(url, self._dir(), keep)
        return self.done[url]

    def drop(self) -> None:
        for entry in self.dirs:
            entry.discard()
        self.dirs, self.done = [], {}


class InlineFile:
    """A file COPY/ADD writes from bytes it holds (a heredoc)."""

    def __init__(self, name: str, data: bytes, mode: int = HEREDOC_MODE, mtime=None):
        self.name = name
        self.data = data
        self.mode = mode
        self.mtime = mtime

    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def write(self, target: str, mode: int | None) -> None:
        with open(target, "wb") as f:
            f.write(self.data)
        os.chmod(target, mode if mode is not None else self.mode)
        if self.mtime is not None:
            os.utime(target, (self.mtime, self.mtime))


class FetchedFile(InlineFile):
    """A downloaded file, kept in a temporary file until the step is done."""

    def __init__(self, name: str, path: str, sha256: str, mtime):
        super().__init__(name, b"", URL_MODE, mtime)
        self.path = path
        self.sha256 = sha256

    def digest(self) -> str:
        return self.sha256

    def write(self, target: str, mode: int | None) -> None:
        shutil.copyfile(self.path, target)
        os.chmod(target, mode if mode is not None else self.mode)
        if self.mtime is not None:
            os.utime(target, (self.mtime, self.mtime))


class Excluder:
    """``COPY --exclude=PATTERN`` (repeatable): Go's filepath.Match rules plus ``**``, as
    in .dockerignore; a pattern is matched against a source's name and against the paths
    below a source directory, relative to it.  An excluded directory is skipped whole."""

    def __init__(self, patterns: list):
        from pbox.build.ignore import DockerIgnore

        self.rules = DockerIgnore.from_text("\n".join(patterns))

    @classmethod
    def of(cls, inst):
        patterns = [p for p in inst.flag_all("exclude") if p]
        return cls(patterns) if patterns else None

    def skip(self, rel: str) -> bool:
        return bool(rel) and self.rules.matches(rel)


def split_heredoc_words(inst) -> list:
    """The instruction's raw words without its ``<<NAME`` heredoc words."""
    if not inst.heredoc_info or inst.json:
        return list(inst.args)
    out, left = [], len(inst.heredoc_info)
    for word in inst.args:
        if left and HEREDOC_WORD.match(word):
            left -= 1
            continue
        out.append(word)
    return out


def heredoc_files(inst, env: dict) -> list:
    """InlineFile for each heredoc of a COPY/ADD, variables expanded as BuildKit does."""
    from pbox.build.shellwords import Lexer, LexError

    files = []
    for doc in inst.heredoc_info:
        content = doc.content
        if doc.expand:
            try:
                content = Lexer(content, env, inst.escape, raw_quotes=True,
                                raw_escapes=True).process()[0]
            except LexError as e:
                raise BuildError(f"heredoc {doc.name}: {e}")
        files.append(InlineFile(doc.name, content.encode()))
    return files


# -- ADD <url> ----------------------------------------------------------------------------------


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def is_git(s: str) -> bool:
    base = s.split("#", 1)[0]
    return (s.startswith(("git@", "git://")) or (s.startswith(("http://", "https://", "ssh://"))
                                                  and base.rstrip("/").endswith(".git")))


def parse_checksum(value: str) -> str:
    """``sha256:HEX`` -> HEX (the only algorithm checked)."""
    algo, sep, hexd = value.partition(":")
    if not sep or algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise BuildError(f"invalid checksum {value!r}: expected sha256:<64 hex digits>")
    return hexd


def url_name(url: str) -> str:
    """The file name docker gives a download: the last component of the URL's path."""
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(url).path)
    name = posixpath.basename(path.rstrip("/"))
    return name or "__unnamed__"


def fetch(url: str, dest_dir: str, checksum: str | None = None) -> FetchedFile:
    """Download ``url`` into ``dest_dir`` (streamed, hashed on the way)."""
    import requests

    from pbox.oci.registry import redact_url

    path = os.path.join(dest_dir, "download")
    h = hashlib.sha256()
    try:
        with requests.Session() as s:
            s.trust_env = True
            with s.get(url, stream=True, timeout=60, allow_redirects=True) as resp:
                if resp.status_code != 200:
                    raise BuildError(f"ADD {redact_url(url)}: download failed: "
                                     f"HTTP {resp.status_code} {resp.reason or ''}".rstrip())
                last = resp.headers.get("Last-Modified")
                with open(path, "wb") as f:
                    for chunk in resp.iter_content(_CHUNK):
                        h.update(chunk)
                        f.write(chunk)
    except requests.RequestException as e:
        raise BuildError(f"ADD {redact_url(url)}: download failed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
    digest = h.hexdigest()
    if checksum is not None and digest != checksum:
        raise BuildError(f"ADD {redact_url(url)}: checksum mismatch: expected sha256:{checksum}, "
                         f"got sha256:{digest}")
    mtime = None
    if last:
        try:
            from email.utils import parsedate_to_datetime  # ~13 ms: only for URLs

            mtime = int(parsedate_to_datetime(last).timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            mtime = None
    return FetchedFile(url_name(url), path, digest, mtime)


# -- ADD <git repository> ---------------------------------------------------------------------


class GitTree:
    """A checked-out repository: ``root`` (the tree or its SUBDIR) at ``commit``."""

    def __init__(self, root: str, commit: str):
        self.root = root
        self.commit = commit


def git_checkout(url: str, dest_dir: str, keep_git_dir: bool = False) -> GitTree:
    import subprocess

    from pbox.oci.registry import redact_url

    base, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    shown = redact_url(base)
    tree = os.path.join(dest_dir, "tree")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true",
               GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")

    def git(*args, cwd=None) -> str:
        try:
            p = subprocess.run(["git", "-c", "safe.directory=*", "-c", "advice.detachedHead=false",
                                *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=600)
        except FileNotFoundError:
            raise BuildError(f"ADD {shown}: git is not installed")
        except subprocess.TimeoutExpired:
            raise BuildError(f"ADD {shown}: git {args[0]} timed out")
        if p.returncode != 0:
            why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
            raise BuildError(f"ADD {shown}: git {args[0]} failed: {why}")
        return p.stdout.strip()

    git("clone", "-q", "--no-checkout", "--", base, tree)
    commit = ""
    for cand in ([f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref] if ref else ["HEAD"]):
        try:
            commit = git("rev-parse", "--verify", "-q", f"{cand}^{{commit}}", cwd=tree)
        except BuildError:
            continue
        if commit:
            break
    if not commit:
        raise BuildError(f"ADD {shown}: no branch, tag or commit {ref!r} in the repository")
    git("checkout", "-q", "--detach", commit, cwd=tree)
    if os.path.exists(os.path.join(tree, ".gitmodules")):
        git("submodule", "update", "-q", "--init", "--recursive", "--depth", "1", cwd=tree)
    if not keep_git_dir:
        shutil.rmtree(os.path.join(tree, ".git"))
    root = tree
    if subdir:
        parts = [p for p in posixpath.normpath("/" + subdir).split("/") if p]
        root = os.path.join(tree, *parts)
        if os.path.islink(root) or not os.path.isdir(root) or any(
                os.path.islink(os.path.join(tree, *parts[:i])) for i in range(1, len(parts))):
            raise BuildError(f"ADD {shown}: {subdir!r} is no directory of the repository")
    return GitTree(root, commit)
