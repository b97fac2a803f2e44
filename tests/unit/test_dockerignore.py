""".dockerignore matching: the examples of docker's documentation and patternmatcher's rules."""

from __future__ import annotations

import pytest

from pbox.build.ignore import DockerIgnore, DockerIgnoreError

DOCS_EXAMPLE = """\
# comment
*/temp*
*/*/temp*
temp?
"""


@pytest.mark.parametrize(
    "path, ignored",
    [
        ("somedir/temporary.txt", True),
        ("somedir/temp", True),
        ("somedir/temp/file", True),
        ("somedir/subdir/temporary.txt", True),
        ("tempa", True),
        ("tempb", True),
        ("temp", False),
        ("temporary.txt", False),
        ("a/b/c/temp.txt", False),
        ("# comment", False),
    ],
)
def test_docs_example(path, ignored):
    assert DockerIgnore.from_text(DOCS_EXAMPLE).matches(path) is ignored


@pytest.mark.parametrize(
    "text, path, ignored",
    [
        # ** matches any number of directories, including none
        ("**/*.go", "main.go", True),
        ("**/*.go", "a/b/c/main.go", True),
        ("**/*.go", "a/main.gox", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "ab", False),
        ("**", "anything/at/all", True),
        ("dir/**", "dir/a", True),
        ("dir/**", "dir", False),
        # exceptions; the last matching line wins
        ("*.md\n!README.md\n", "README.md", False),
        ("*.md\n!README.md\n", "CHANGES.md", True),
        ("*.md\n!README*.md\nREADME-secret.md\n", "README-secret.md", True),
        ("*.md\n!README*.md\nREADME-secret.md\n", "README-public.md", False),
        ("*.md\nREADME-secret.md\n!README*.md\n", "README-secret.md", False),
        # a directory excludes what is inside unless re-included
        ("docs\n", "docs/a/b.txt", True),
        ("docs\n!docs/keep.txt\n", "docs/keep.txt", False),
        ("docs\n!docs/keep.txt\n", "docs/other.txt", True),
        # * and ? stop at /
        ("*", "a", True),
        ("*", "a/b", True),  # through the parent "a"
        ("a/*", "a/b/c", True),
        ("*.txt", "dir/x.txt", False),
        ("?", "ab", False),
        # leading /, ./, trailing / and spaces are cleaned
        ("/node_modules/\n", "node_modules/x.js", True),
        ("./build\n", "build/out", True),
        ("  spaced.txt   \n", "spaced.txt", True),
        ("a//b/../c\n", "a/c", True),
        ("! keep\nkeep\n", "keep", True),
        # character classes and escapes
        ("[a-c].txt", "b.txt", True),
        ("[a-c].txt", "d.txt", False),
        ("[^a].txt", "a.txt", False),
        ("[^a].txt", "z.txt", True),
        ("\\*.txt", "*.txt", True),
        ("\\*.txt", "x.txt", False),
        ("file.(1)+", "file.(1)+", True),
        ("file.(1)+", "fileX(1)", False),
        # comments only at the very start of a line
        ("#x\n", "#x", False),
        (" #x\n", "#x", True),
        # paths given with ./ or a leading /
        ("a\n", "./a/b", True),
        ("a\n", "/a", True),
        ("", "a", False),
    ],
)
def test_patterns(text, path, ignored):
    assert DockerIgnore.from_text(text).matches(path) is ignored


def test_patterns_are_cleaned_and_kept_in_order():
    di = DockerIgnore.from_text("\ufeff/a/\n!./b\n\n# c\nd/../e\n")
    assert di.patterns == ["a", "!b", "e"]
    assert di.has_exclusions


def test_bad_patterns():
    with pytest.raises(DockerIgnoreError):
        DockerIgnore.from_text("!\n")
    with pytest.raises(DockerIgnoreError):
        DockerIgnore.from_text("[abc\n")


@pytest.mark.parametrize(
    "text, directory, skip",
    [
        ("node_modules\n", "node_modules", True),
        ("node_modules\n", "src", False),
        ("docs\n!docs/keep.txt\n", "docs", False),
        ("docs\n!other/keep.txt\n", "docs", True),
        ("docs\n!**/*.md\n", "docs", False),
        ("a\n!a/b/c\n", "a/x", True),
        ("a\n!a/b/c\n", "a/b", False),
        ("a\n!a/*/c\n", "a/x", False),
        ("*\n!*.go\n", "vendor", True),
    ],
)
def test_excludes_dir_entirely(text, directory, skip):
    assert DockerIgnore.from_text(text).excludes_dir_entirely(directory) is skip
