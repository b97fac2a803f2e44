"""The Dockerfile parser and docker's variable substitution, against BuildKit's rules."""

from __future__ import annotations

import pytest

from pbox.build.dockerfile import (
    EXPANDING,
    DockerfileError,
    expand,
    expand_words,
    key_values,
    parse,
    parse_duration,
)


def only(text: str):
    """The single instruction after a FROM line."""
    df = parse("FROM scratch\n" + text)
    assert len(df.stages[0].instructions) == 1, df.stages[0].instructions
    return df.stages[0].instructions[0]


# --- substitution -------------------------------------------------------------

ENV = {"PWD": "/home", "EMPTY": "", "A": "a", "SP": "x  y", "FOO": "xxyy"}


@pytest.mark.parametrize(
    "word, expected",
    [
        ("plain", "plain"),
        ("$PWD", "/home"),
        ("${PWD}", "/home"),
        ("${PWD}x", "/homex"),
        ("$PWDx", ""),
        ("$UNSET", ""),
        ("\\$PWD", "$PWD"),
        ("\\${PWD}", "${PWD}"),
        ("'$PWD'", "$PWD"),
        ('"$PWD"', "/home"),
        ('"\\$PWD"', "$PWD"),
        ('"a\\b"', "a\\b"),
        ('"a\\"b"', 'a"b'),
        ("a\\ b", "a b"),
        ("a\\\\b", "a\\b"),
        ("$", "$"),
        ("a$", "a$"),
        ("$/x", "$/x"),
        ("$1", ""),
        ("x y", "x y"),
        ("'a b' \"c d\"", "a b c d"),
        # :- and - differ for empty variables
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${UNSET:-def}", "def"),
        ("${UNSET-def}", "def"),
        ("${A:-def}", "a"),
        ("${A-def}", "a"),
        ("${UNSET:-}", ""),
        # :+ and +
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("${UNSET+alt}", ""),
        ("${A:+alt}", "alt"),
        ("${A+alt}", "alt"),
        # ? without colon: empty is fine
        ("${EMPTY?msg}", ""),
        ("${A:?msg}", "a"),
        # nested
        ("${UNSET:-$A}", "a"),
        ("${UNSET:-${PWD}/x}", "/home/x"),
        ("${UNSET:-'q u'}", "q u"),
        ("${A:+-${A}}", "-a"),
        # prefix/suffix trimming and replacement (BuildKit extensions)
        ("${FOO#*x*y}", "y"),
        ("${FOO#*}", "xxyy"),
        ("${FOO##*x}", "yy"),
        ("${FOO%y*}", "xxy"),
        ("${FOO%%y*}", "xx"),
        ("${FOO#}", "xxyy"),
        ("${FOO/x/z}", "zxyy"),
        ("${FOO//x/z}", "zzyy"),
        ("${FOO///}", "xxyy"),
    ],
)
def test_expand(word, expected):
    assert expand(word, ENV) == expected


def test_expand_escaped_patterns():
    assert expand("${FOO%%\\**}", {"FOO": "xx**"}) == "xx"
    assert expand("${FOO#?\\?}", {"FOO": "???y"}) == "?y"
    assert expand("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}) == "\\/tmp\\/foo.txt"
    assert expand("${FOO/$N/$R}", {"FOO": "/a/foo/b/c.txt", "N": "/?/", "R": "/"}) == "/foo/b/c.txt"


@pytest.mark.parametrize(
    "word, message",
    [
        ("${EMPTY:?must be set}", "EMPTY: must be set"),
        ("${UNSET:?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${UNSET?oops $A}", "UNSET: oops a"),
        ("${}", "bad substitution"),
        ("${:x}", "bad substitution"),
        ("${A", "missing '}'"),
        ("${A:-x", "missing '}'"),
        ("${A=x}", "unsupported modifier"),
        ("'abc", "single-quote"),
        ('"abc', "double-quote"),
        ("${FOO//ww}", "missing '/'"),
    ],
)
def test_expand_errors(word, message):
    with pytest.raises(DockerfileError) as err:
        expand(word, ENV)
    assert message in str(err.value)
    assert err.value.exit_code == 125


def test_expand_backtick_escape():
    assert expand("`$A", ENV, escape="`") == "$A"
    assert expand("C:\\dir", ENV, escape="`") == "C:\\dir"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a b  c", ["a", "b", "c"]),
        ("'a b' c", ["a b", "c"]),
        ('"$SP" z', ["x  y", "z"]),
        ("$SP z", ["x", "y", "z"]),
        ("a\\ b", ["a b"]),
        ("pre$A post", ["prea", "post"]),
        ("''", []),
        ("  ", []),
        ("$EMPTY", []),
    ],
)
def test_expand_words(text, expected):
    assert expand_words(text, ENV) == expected


def test_expanding_set_follows_docker():
    assert {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
            "VOLUME", "WORKDIR", "ARG"} == set(EXPANDING)
    for cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD"):
        assert cmd not in EXPANDING


# --- line handling --------------------------------------------------------------


def test_continuations_comments_and_empty_lines():
    df = parse(
        "FROM alpine\n"
        "RUN echo a \\\n"
        "  # a comment inside is dropped\n"
        "\n"
        "    && echo b \\   \n"
        "    && echo c\n"
        "  # indented comment\n"
        "run echo d\n"
    )
    run1, run2 = df.stages[0].instructions
    assert run1.args == ["echo a     && echo b     && echo c"]
    assert run1.line == 2 and run1.end_line == 6
    assert run2.cmd == "RUN" and run2.line == 8


def test_continuation_at_end_of_file_and_crlf():
    df = parse("FROM a\r\nRUN x \\\r\n  y\r\nRUN z \\")
    assert [i.args for i in df.stages[0].instructions] == [["x   y"], ["z"]]


def test_escape_directive_backtick():
    df = parse("# escape=`\nFROM windows\nRUN dir C:\\ `\n  /s\nCOPY a\\b c:\\x\\\n")
    assert df.escape == "`"
    run, copy = df.stages[0].instructions
    assert run.args == ["dir C:\\   /s"]
    assert copy.args == ["a\\b", "c:\\x\\"]
    assert run.escape == "`"


def test_directives():
    df = parse("# syntax=docker/dockerfile:1\n#ESCAPE = `\nFROM a\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert df.escape == "`"
    # after a normal comment or an instruction, a directive is a plain comment
    assert parse("# hello\n# escape=`\nFROM a\n").escape == "\\"
    assert parse("FROM a\n# escape=`\n").escape == "\\"
    # an empty line ends the directives
    assert parse("\n# escape=`\nFROM a\n").escape == "\\"
    # an unknown directive ends them too
    assert parse("# foo=bar\n# escape=`\nFROM a\n").escape == "\\"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("# escape=x\nFROM a\n", 1, "invalid escape token"),
        ("# escape=`\n# escape=`\nFROM a\n", 2, "only one escape parser directive"),
    ],
)
def test_directive_errors(text, line, message):
    with pytest.raises(DockerfileError) as err:
        parse(text)
    assert str(err.value).startswith(f"Dockerfile:{line}: ")
    assert message in str(err.value)


def test_bom_and_case_insensitive_keywords():
    df = parse("\ufefffrom alpine as Base\nWorkDir /x\n")
    assert df.stages[0].name == "base"
    assert df.stages[0].instructions[0].cmd == "WORKDIR"


# --- instructions ----------------------------------------------------------------


def test_from_forms_and_stages():
    df = parse(
        "ARG V=3\nARG OTHER\n"
        "FROM --platform=$BUILDPLATFORM golang:${V} AS Builder\n"
        "RUN go build\n"
        "FROM alpine\n"
        "COPY --from=builder /out /bin/\n"
    )
    assert [a.args for a in df.meta_args] == [["V=3"], ["OTHER"]]
    b, final = df.stages
    assert (b.index, b.name, b.base, b.platform) == (0, "builder", "golang:${V}", "$BUILDPLATFORM")
    assert (final.index, final.name, final.base, final.platform) == (1, None, "alpine", None)
    assert b.from_instruction.cmd == "FROM" and b.from_instruction.line == 3
    assert df.stage("Builder") is b and df.stage("1") is final and df.stage("0") is b
    with pytest.raises(DockerfileError):
        df.stage("nope")
    with pytest.raises(DockerfileError):
        df.stage("5")


def test_run_forms_and_flags():
    run = only("RUN --mount=type=cache,target=/x --mount=type=secret,id=s --network=none make\n")
    assert run.args == ["make"] and not run.json
    assert run.flag_all("mount") == ["type=cache,target=/x", "type=secret,id=s"]
    assert run.flag("network") == "none"
    assert run.flag("security") is None and run.flag("security", "x") == "x"
    run = only('RUN ["sh", "-c", "echo hi"]\n')
    assert run.args == ["sh", "-c", "echo hi"] and run.json
    # not valid JSON: shell form
    run = only('RUN [ "a", \n')
    assert run.args == ['[ "a",'] and not run.json
    run = only("RUN --mount='type=bind,source=a b' x\n")
    assert run.flag("mount") == "type=bind,source=a b"


def test_cmd_entrypoint_shell():
    assert only("CMD echo $HOME\n").args == ["echo $HOME"]
    cmd = only('CMD ["a", "b"]\n')
    assert cmd.args == ["a", "b"] and cmd.json
    assert only("CMD []\n").args == [] and only("CMD []\n").json
    ep = only('ENTRYPOINT ["/bin/tini", "--"]\n')
    assert ep.args == ["/bin/tini", "--"] and ep.json
    shell = only('SHELL ["powershell", "-command"]\n')
    assert shell.args == ["powershell", "-command"] and shell.json


def test_copy_add_forms():
    copy = only("COPY --chown=1000:1000 --chmod=0755 --link a b /dst/\n")
    assert copy.args == ["a", "b", "/dst/"]
    assert copy.flags == [("chown", "1000:1000"), ("chmod", "0755"), ("link", "true")]
    copy = only('COPY ["a b", "/dst dir/"]\n')
    assert copy.args == ["a b", "/dst dir/"] and copy.json
    assert only("COPY --link=false a b\n").flag("link") == "false"
    add = only("ADD --checksum=sha256:abc https://x/y.tgz /opt/\n")
    assert add.args == ["https://x/y.tgz", "/opt/"] and add.flag("checksum") == "sha256:abc"


def test_env_forms():
    env = only('ENV a=1 b="x y" c=\'$q\' d=e\\ f\n')
    assert key_values(env, {"q": "Q"}) == [("a", "1"), ("b", "x y"), ("c", "$q"), ("d", "e f")]
    legacy = only("ENV PATH /usr/bin:$PATH  and more\n")
    assert key_values(legacy, {"PATH": "/bin"}) == [("PATH", "/usr/bin:/bin  and more")]
    # values see the environment before the instruction
    env = only("ENV a=2 b=$a\n")
    assert key_values(env, {"a": "1"}) == [("a", "2"), ("b", "1")]
    multi = only("ENV a=1 \\\n    b=2\n")
    assert key_values(multi, {}) == [("a", "1"), ("b", "2")]
    assert key_values(only("ENV a=\n"), {}) == [("a", "")]


def test_label_and_arg():
    label = only('LABEL "com.example.vendor"="ACME" version=1.0 desc="a \\"b\\""\n')
    assert key_values(label, {}) == [
        ("com.example.vendor", "ACME"), ("version", "1.0"), ("desc", 'a "b"'),
    ]
    assert key_values(only("LABEL maintainer someone else\n"), {}) == [
        ("maintainer", "someone else")
    ]
    arg = only("ARG A B=2 C=${A:-x} D=\"q r\"\n")
    assert key_values(arg, {}) == [("A", None), ("B", "2"), ("C", "x"), ("D", "q r")]


def test_simple_instructions():
    assert only("EXPOSE 80/tcp 443\n").args == ["80/tcp", "443"]
    assert only("VOLUME /a /b\n").args == ["/a", "/b"]
    vol = only('VOLUME ["/data"]\n')
    assert vol.args == ["/data"] and vol.json
    assert only("USER app:app\n").args == ["app:app"]
    assert only("WORKDIR /my dir\n").args == ["/my dir"]
    assert only("STOPSIGNAL SIGKILL\n").args == ["SIGKILL"]
    assert only("MAINTAINER Jane <j@x>\n").args == ["Jane <j@x>"]


def test_healthcheck():
    hc = only('HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD ["curl", "-f", "x"]\n')
    assert hc.args == ["CMD", "curl", "-f", "x"] and hc.json
    assert hc.flag("interval") == "5m" and hc.flag("retries") == "3"
    hc = only("HEALTHCHECK cmd curl -f http://localhost/ || exit 1\n")
    assert hc.args == ["CMD", "curl -f http://localhost/ || exit 1"] and not hc.json
    assert only("HEALTHCHECK NONE\n").args == ["NONE"]
    assert parse_duration("1m30s") == 90 * 10**9
    assert parse_duration("500ms") == 5 * 10**8
    assert parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("5")


def test_onbuild():
    ob = only("ONBUILD RUN --mount=type=cache,target=/c make\n")
    assert ob.args == ["RUN --mount=type=cache,target=/c make"]
    assert ob.onbuild.cmd == "RUN" and ob.onbuild.args == ["make"]
    assert ob.onbuild.flag("mount") == "type=cache,target=/c"
    ob = only("ONBUILD COPY <<EOF /x\nhi\nEOF\n")
    assert ob.onbuild.heredocs == [("EOF", "hi\n")]


def test_original_text():
    run = only("RUN  --network=host  echo \\\n  hi\n")
    assert run.original == "RUN  --network=host  echo   hi"


# --- heredocs --------------------------------------------------------------------


def test_heredocs():
    df = parse(
        "FROM a\n"
        "RUN <<EOF\n"
        "echo $HOME\n"
        "  indented\n"
        "EOF\n"
        "RUN <<-EOT bash\n"
        "\t\techo tabbed\n"
        "\tEOT\n"
        'RUN <<"EOF"\n'
        "echo $NOT\n"
        "EOF\n"
        "RUN cat <<A > /a && cat <<'B' > /b\n"
        "a\n"
        "A\n"
        "b\n"
        "B\n"
        "COPY <<EOF /etc/conf\n"
        "x=1\n"
        "EOF\n"
        "RUN 3<<EOF cat /dev/fd/3\n"
        "EOF\n"
        "RUN echo done\n"
    )
    insts = df.stages[0].instructions
    assert insts[0].heredocs == [("EOF", "echo $HOME\n  indented\n")] and insts[0].heredoc_expand
    assert insts[0].args == ["<<EOF"] and insts[0].line == 2 and insts[0].end_line == 5
    assert insts[1].heredocs == [("EOT", "echo tabbed\n")]
    assert insts[1].heredoc_info[0].chomp
    assert insts[2].heredocs == [("EOF", "echo $NOT\n")] and not insts[2].heredoc_expand
    assert insts[3].heredocs == [("A", "a\n"), ("B", "b\n")]
    assert [h.expand for h in insts[3].heredoc_info] == [True, False]
    assert insts[4].cmd == "COPY" and insts[4].args == ["<<EOF", "/etc/conf"]
    assert insts[4].heredocs == [("EOF", "x=1\n")]
    assert insts[5].heredoc_info[0].fd == 3 and insts[5].heredocs == [("EOF", "")]
    assert insts[6].args == ["echo done"] and insts[6].line == 22


def test_heredoc_delimiter_forms():
    df = parse(
        "FROM a\n"
        "RUN << EOF\nx\nEOF\n"
        "RUN <<$E cat\ny\n$E\n"
        "RUN 2<< 'Q' cat\nq\nQ\n"
        "RUN <<E\"O\"F\nz\nEOF\n"
    )
    got = [(i.heredoc_info[0].name, i.heredoc_info[0].expand) for i in df.stages[0].instructions]
    assert got == [("EOF", True), ("$E", True), ("Q", False), ("EOF", False)]
    assert df.stages[0].instructions[2].heredoc_info[0].fd == 2


def test_heredoc_not_in_other_instructions_or_quotes():
    assert only("ENV A=<<EOF\n").heredocs == []
    assert only("RUN echo '<<EOF'\n").heredocs == []
    assert only("RUN echo a<<EOF\n").heredocs == []


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", None, "no instructions"),
        ("# only a comment\n\n", None, "no instructions"),
        ("ARG A\n", None, "no build stage"),
        ("RUN x\nFROM a\n", 1, "no build stage"),
        ("FROM a\nFOO bar\n", 2, "unknown instruction: FOO"),
        ("FROM a\n\nRUN\n", 3, "RUN requires at least one argument"),
        ("FROM a\nRUN [1, 2]\n", 2, "not a JSON array of strings"),
        ("FROM a\nSHELL sh -c\n", 2, "SHELL requires the arguments to be in JSON form"),
        ("FROM a\nSHELL []\n", 2, "SHELL requires at least one argument"),
        ("FROM a\nENV\n", 2, "ENV requires at least one argument"),
        ("FROM a\nENV A\n", 2, "ENV must have two arguments"),
        ("FROM a\nENV A=1 B\n", 2, "can't find ="),
        ("FROM a\nENV =1\n", 2, "names can not be blank"),
        ("FROM a\nLABEL\n", 2, "LABEL requires at least one argument"),
        ("FROM a\nARG\n", 2, "ARG requires at least one argument"),
        ("FROM a\nCOPY a\n", 2, "COPY requires at least two arguments"),
        ("FROM a\nADD\n", 2, "ADD requires at least two arguments"),
        ("FROM a\nEXPOSE\n", 2, "EXPOSE requires at least one argument"),
        ("FROM a\nVOLUME\n", 2, "VOLUME requires at least one argument"),
        ('FROM a\nVOLUME [""]\n', 2, "can not be an empty string"),
        ("FROM a\nUSER\n", 2, "USER requires exactly one argument"),
        ("FROM a\nWORKDIR   \n", 2, "WORKDIR requires exactly one argument"),
        ("FROM a\nSTOPSIGNAL\n", 2, "STOPSIGNAL requires exactly one argument"),
        ("FROM\n", 1, "FROM requires either one or three arguments"),
        ("FROM a b\n", 1, "FROM requires either one or three arguments"),
        ("FROM a IS b\n", 1, "expected 'AS'"),
        ("FROM a AS 1x\n", 1, "invalid name for build stage"),
        ("FROM a AS x\nFROM b AS X\n", 2, "duplicate stage name"),
        ("FROM --foo=1 a\n", 1, "unknown flag: foo"),
        ("FROM a\nCOPY --from=a --from=b x y\n", 2, "duplicate flag specified: from"),
        ("FROM a\nCOPY --chown x y\n", 2, "missing a value on flag: chown"),
        ("FROM a\nCOPY --link=maybe x y\n", 2, "expecting boolean value"),
        ("FROM a\nADD --from=x a b\n", 2, "unknown flag: from"),
        ("FROM a\nENV --x=1 a=b\n", 2, "unknown flag: x"),
        ("FROM a\nRUN --mount\n", 2, "missing a value on flag: mount"),
        ("FROM a\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
        ("FROM a\nRUN <<A <<B\na\nA\nb\n", 2, "unterminated heredoc"),
        ("FROM a\nHEALTHCHECK\n", 2, "HEALTHCHECK requires at least one argument"),
        ("FROM a\nHEALTHCHECK NONE x\n", 2, "takes no arguments"),
        ("FROM a\nHEALTHCHECK RUN x\n", 2, "unknown type"),
        ("FROM a\nHEALTHCHECK CMD\n", 2, "missing command"),
        ("FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, "invalid duration"),
        ("FROM a\nHEALTHCHECK --timeout=10us CMD x\n", 2, "less than 1ms"),
        ("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, "cannot be negative"),
        ("FROM a\nONBUILD\n", 2, "ONBUILD requires at least one argument"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD ONBUILD"),
        ("FROM a\nONBUILD FROM b\n", 2, "isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD BOGUS x\n", 2, "unknown instruction"),
        ("FROM a\nRUN a \\\n b\nBAD x\n", 4, "unknown instruction: BAD"),
    ],
)
def test_errors_name_the_line(text, line, message):
    with pytest.raises(DockerfileError) as err:
        parse(text)
    text_ = str(err.value)
    prefix = f"Dockerfile:{line}: " if line else "Dockerfile: "
    assert text_.startswith(prefix), text_
    assert message in text_, text_
    assert err.value.line == line


def test_key_values_errors_carry_the_line():
    inst = parse("FROM a\n\nENV A=${B:?needed}\n").stages[0].instructions[0]
    with pytest.raises(DockerfileError) as err:
        key_values(inst, {})
    assert str(err.value) == "Dockerfile:3: B: needed"


# -- what the executor reads from parsed instructions (pure helpers) ------------------------


def test_run_mount_values_as_buildkit_reads_them():
    from pbox.build import mounts
    from pbox.errors import BuildError

    m = mounts.parse("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0700,uid=5",
                     lambda w: w)
    assert (m.type, m.target, m.id, m.sharing, m.mode, m.uid, m.gid) == (
        "cache", "/root/.cache", "pip", "locked", 0o700, 5, None)
    m = mounts.parse("dst=/src,from=builder,src=/out,readwrite", lambda w: w)
    assert (m.type, m.target, m.from_, m.source, m.rw) == ("bind", "/src", "builder", "/out",
                                                           True)
    assert mounts.parse("target=/x,ro=false", lambda w: w).rw is True
    s = mounts.parse("type=secret,id=tok", lambda w: w)
    assert (s.target, s.required) == ("/run/secrets/tok", False)
    s = mounts.parse("type=secret,id=tok,env=TOKEN,required", lambda w: w)
    assert (s.target, s.env, s.required) == ("", "TOKEN", True)
    assert mounts.parse("type=secret,target=/run/key", lambda w: w).id == "key"
    m = mounts.parse("type=cache,target=$DIR", lambda w: w.replace("$DIR", "/c"))
    assert m.target == "/c"  # values are expanded with the stage's variables
    m = mounts.parse('type=bind,"source=a,b",target=/x', lambda w: w)
    assert m.source == "a,b"  # CSV quoting
    for bad in ("type=nope,target=/x", "type=cache", "type=cache,target=/x,sharing=no",
                "type=cache,target=/x,mode=9z", "type=bind,target=/x,colour=red",
                "type=ssh", "type=secret", "target=/x,ro=maybe"):
        with pytest.raises(BuildError):
            mounts.parse(bad, lambda w: w)


def test_heredoc_sources_and_url_helpers():
    from pbox.build import sources
    from pbox.errors import BuildError

    inst = only('COPY <<EOF <<-"RAW" /dir/\na $X "q"\nEOF\n\tb $X\n\tRAW\n')
    assert sources.split_heredoc_words(inst) == ["/dir/"]
    files = sources.heredoc_files(inst, {"X": "1"})
    assert [(f.name, f.data, f.mode) for f in files] == [
        ("EOF", b'a 1 "q"\n', 0o664), ("RAW", b"b $X\n", 0o664)]
    plain = only("COPY a b /c/\n")
    assert sources.split_heredoc_words(plain) == ["a", "b", "/c/"]
    assert sources.url_name("https://h/a/b%20c.tar.gz?x=1") == "b c.tar.gz"
    assert sources.url_name("http://h/") == "__unnamed__"
    assert sources.parse_checksum("sha256:" + "a" * 64) == "a" * 64
    for bad in ("md5:abc", "sha256:xyz", "a" * 64):
        with pytest.raises(BuildError):
            sources.parse_checksum(bad)
    assert sources.is_url("https://h/f") and not sources.is_url("f")
    assert sources.is_git("git@h:o/r.git") and sources.is_git("https://h/o/r.git#main")
    assert not sources.is_git("https://h/o/r.tar")
