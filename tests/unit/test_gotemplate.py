"""Go text/template semantics as docker's --format uses them.

The GO_* tables hold outputs and messages that Go's own text/template and
text/tabwriter produced for the same templates and data (data decoded from JSON, so
maps are map[string]interface{}).  The few places where pbox deliberately follows
docker's typed data instead of untyped Go maps have their own tests below.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from pbox.errors import UsageError
from pbox.gotemplate import NO_VALUE, Template, default_header, format_rows, render, tabwrite

CONTAINER = {
    "Id": "3f4e5d6c7b8a",
    "Name": "/web",
    "State": {"Status": "running", "Running": True, "Pid": 4242, "ExitCode": 0},
    "Config": {
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Env": ["PATH=/usr/bin", "A=1"],
        "Labels": {"com.example.tier": "front", "maintainer": "me"},
    },
    "Mounts": [
        {"Source": "/srv", "Destination": "/data"},
        {"Source": "/tmp", "Destination": "/scratch"},
    ],
    "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
}

# (template, data, output), each output as Go 1.19's text/template printed it
GO_CASES = [
    ("{{.Name}}", CONTAINER, "/web"),
    (
        "{{.State.Status}} {{.State.Pid}} {{.State.Running}} {{.State.ExitCode}}",
        CONTAINER,
        "running 4242 true 0",
    ),
    ("{{.Config.Cmd}}", CONTAINER, "[nginx -g daemon off;]"),
    ("{{.Config.Labels}}", CONTAINER, "map[com.example.tier:front maintainer:me]"),
    (
        "{{.Config.Labels.maintainer}}|{{.Config.Labels.nope}}|{{.Nope}}|{{.Nope.Deeper.Still}}",
        CONTAINER,
        "me|<no value>|<no value>|<no value>",
    ),
    ('{{index .Config.Labels "com.example.tier"}}', CONTAINER, "front"),
    (
        '{{index .Config.Cmd 0}} {{index .Mounts 1 "Source"}} {{(index .Mounts 0).Destination}}',
        CONTAINER,
        "nginx /tmp /data",
    ),
    (
        "{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}",
        CONTAINER,
        "/srv:/data /tmp:/scratch ",
    ),
    (
        "{{range $p, $conf := .Ports}}{{$p}} -> {{(index $conf 0).HostPort}}{{end}}",
        CONTAINER,
        "80/tcp -> 8080",
    ),
    ("{{len .Config.Env}} {{len .Name}} {{len .Config.Labels}}", CONTAINER, "2 4 2"),
    ("{{.}}", [1, "a", None, [2, 3], {"k": "v", "a": True}], "[1 a <nil> [2 3] map[a:true k:v]]"),
    ("{{.}}", {"b": 2.5, "a": -1, "c": "x y"}, "map[a:-1 b:2.5 c:x y]"),
    (
        "{{.A}} {{.B}} {{.C}} {{.D}} {{.E}} {{.F}} {{.G}} {{.H}}",
        {
            "A": 1.0,
            "B": 0.0001,
            "C": 1e-05,
            "D": 100000.0,
            "E": 1000000.0,
            "F": -2.5,
            "G": 1e100,
            "H": 12345.678,
        },
        "1 0.0001 1e-05 100000 1e+06 -2.5 1e+100 12345.678",
    ),
    (
        "{{1.5}} {{0x1F}} {{1e3}} {{-3}} {{0o17}} {{017}} {{0b101}} {{1_000}} {{.5}} {{'a'}} {{true}} {{false}}",
        None,
        "1.5 31 1000 -3 15 15 5 1000 0.5 97 true false",
    ),
    ('{{`raw\\n{{x}}`}}|{{"esc\\n\\t\\u00e9\\x41\\\\"}}', None, "raw\\n{{x}}|esc\n\téA\\"),
    (
        "{{range .L}}[{{.}}]{{else}}empty{{end}}|{{range .E}}x{{else}}empty{{end}}|{{range .Z}}x{{else}}none{{end}}",
        {"L": [1, 2], "E": []},
        "[1][2]|empty|none",
    ),
    (
        "{{range $i, $e := .L}}{{$i}}={{$e}};{{end}}{{range $k, $v := .M}}{{$k}}:{{$v}},{{end}}",
        {"L": ["a", "b"], "M": {"z": 1, "a": 2}},
        "0=a;1=b;a:2,z:1,",
    ),
    ("{{range $e := .L}}{{$e}}{{$.X}}{{end}}", {"L": ["a", "b"], "X": "!"}, "a!b!"),
    (
        "{{range .Outer}}{{$o := .Name}}{{range .Inner}}{{$o}}.{{.}}/{{$.Top}} {{end}}{{end}}",
        {"Top": "T", "Outer": [{"Name": "a", "Inner": [1, 2]}, {"Name": "b", "Inner": [3]}]},
        "a.1/T a.2/T b.3/T ",
    ),
    ("{{range $i, $e := .L}}{{if $i}}, {{end}}{{$e}}{{end}}", {"L": ["a", "b", "c"]}, "a, b, c"),
    (
        "{{range .L}}{{if eq . 2}}{{continue}}{{end}}{{if eq . 4}}{{break}}{{end}}{{.}}{{end}}",
        {"L": [1, 2, 3, 4, 5]},
        "13",
    ),
    (
        '{{if eq .S "a"}}A{{else if eq .S "b"}}B{{else if eq .S "c"}}C{{else}}other{{end}}',
        {"S": "a"},
        "A",
    ),
    (
        '{{if eq .S "a"}}A{{else if eq .S "b"}}B{{else if eq .S "c"}}C{{else}}other{{end}}',
        {"S": "c"},
        "C",
    ),
    (
        '{{if eq .S "a"}}A{{else if eq .S "b"}}B{{else if eq .S "c"}}C{{else}}other{{end}}',
        {"S": "zzz"},
        "other",
    ),
    (
        "{{with .A}}{{.B}}{{else}}no{{end}} {{with .X}}{{.}}{{else}}noX{{end}}",
        {"A": {"B": "b"}},
        "b noX",
    ),
    ("{{with $x := .A}}{{$x}}{{.}}{{end}}", {"A": "v"}, "vv"),
    (
        "{{if not .A}}none{{end}}{{if .L}}L{{end}}{{if .M}}M{{end}}{{if .E}}E{{end}}{{if .Z}}Z{{end}}{{if .F}}F{{end}}",
        {"L": [1], "M": {}, "E": "", "Z": 0, "F": 0.0},
        "noneL",
    ),
    (
        "{{if and .A (not .B)}}yes{{end}} {{if or .B .C}}c{{end}}",
        {"A": 1, "B": 0, "C": "x"},
        "yes c",
    ),
    ("{{$x := 1}}{{$x}} {{$x = 2}}{{$x}} {{$}}", "root", "1 2 root"),
    ("{{$x := 0}}{{range .L}}{{$x = .}}{{end}}{{$x}}", {"L": [1, 2, 3]}, "3"),
    (
        "{{$n := .Name}}{{range .Mounts}}{{$n}}:{{.Source}} {{end}}",
        CONTAINER,
        "/web:/srv /web:/tmp ",
    ),
    (
        '{{.Name | upper}} {{.Name | printf "%s-%s" "x"}} {{"a" | eq "a"}} {{.Name | len | printf "%03d"}}',
        {"Name": "web"},
        "WEB x-web true 003",
    ),
    (
        '{{(index .L 0).Name}} {{len (index .L 0).Name}} {{(.M).k}} {{printf "%d" (len (split "a:b:c" ":"))}}',
        {"L": [{"Name": "abc"}], "M": {"k": "v"}},
        "abc 3 v 3",
    ),
    (
        '{{eq 1 1}} {{ne 1 2}} {{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1.5 2.5}} {{eq "a" "b" "a"}} {{and 1 0 2}} {{or 0 "" 3}} {{not true}} {{and 1 2}} {{or 0 ""}}',
        None,
        "true true true true true false true 0 3 false 2 ",
    ),
    (
        '{{print "a" 1 2 "b" true}}|{{println 1 "a" 2}}|{{print}}|{{print nil}}',
        None,
        "a1 2btrue|1 a 2\n||<nil>",
    ),
    (
        '{{join (split "x,y" ",") ", "}} {{split "abc" ""}} {{lower "ABC"}} {{upper "abc"}} {{title "hello wor_ld foo-bar x.y élan"}}',
        None,
        "x, y [a b c] abc ABC Hello Wor_ld Foo-Bar X.Y Élan",
    ),
    (
        '{{pad "x" 2 3}}|{{pad "" 2 3}}|{{truncate "abcdef" 3}}|{{truncate "ab" 5}}',
        None,
        "  x   ||abc|ab",
    ),
    (
        '{{slice .L 1 3}} {{slice "abcdef" 2}} {{slice .L}} {{index "abc" 1}}',
        {"L": [1, 2, 3, 4]},
        "[2 3] cdef [1 2 3 4] 98",
    ),
    ("{{len .S}} {{index .S 1}} {{slice .S 1 3}}", {"S": "héllo"}, "6 195 é"),
    ("a  {{- .X -}}  b\n  {{- .Y}}\n{{.Z -}}\n\n c", {"X": 1, "Y": 2, "Z": 3}, "a1b2\n3c"),
    ("x\n  {{- range .L -}}\n  [{{.}}]\n  {{- end -}}\n  y", {"L": [1, 2]}, "x[1][2]y"),
    ("a {{/* comment */}} b {{- /* c2 */ -}} c {{/* multi\nline */}}d", None, "a  bc d"),
    ("{{ .A }}-{{.A}}-{{\t.A\n}}-{{- .A}}", {"A": 1}, "1-1-1-1"),
    ("{{- .A -}}|", {"A": "  "}, "  |"),
    (
        '{{printf "%s %d %v %q %-10s| %5.2f %05d %x %X %o %b %e %g %t %c %U %%" "s" 42 1.5 "q\\"" "left" 3.14159 -42 255 255 8 5 1234.5678 0.00001234 true 65 65}}',
        None,
        's 42 1.5 "q\\"" left      |  3.14 -0042 ff FF 10 101 1.234568e+03 1.234e-05 true A U+0041 %',
    ),
    (
        '{{printf "%6.2f|%-8.3s|%8d|%+d|% d|%x|%#x|%#o|%08.3f|%-5d|" 3.14159 "abcdef" 42 5 5 "hi" 255 8 -3.14159 7}}',
        None,
        "  3.14|abc     |      42|+5| 5|6869|0xff|010|-003.142|7    |",
    ),
    (
        '{{printf "%8.3f|%-8.2f|%08.2f|%+.1e|%x|%X|%#v|%#v" -1.5 2.25 -3.5 12345.0 -255 "hi" "q" 3}}',
        None,
        '  -1.500|2.25    |-0003.50|+1.2e+04|-ff|6869|"q"|3',
    ),
    (
        '{{printf "%3c|%-4q|%#U|%5t|%.1s|%q" 97 "x" 97 true "xyz" \'x\'}}',
        None,
        "  a|\"x\" |U+0061 'a'| true|x|'x'",
    ),
    ('{{printf "%*d|%-*d|%.*f" 5 1 4 2 2 3.14159}}', None, "    1|2   |3.14"),
    (
        '{{printf "%v %v %v %v %v %v" 1e20 1e21 123456.0 1234567.0 0.0001 0.00001}}',
        None,
        "1e+20 1e+21 123456 1.234567e+06 0.0001 1e-05",
    ),
    (
        '{{printf "%.3v %.2e %G %E %.0f %5.1g" 3.14159 1234.5 1e-10 1.5 2.5 123.0}}',
        None,
        "3.14 1.23e+03 1E-10 1.500000E+00 2 1e+02",
    ),
    (
        '{{printf "%05d|%-05d|%+05d|%x|%o|%#b" -42 42 42 -255 -8 5}}',
        None,
        "-0042|42   |+0042|-ff|-10|0b101",
    ),
    (
        '{{printf "%.0d|%.3d|%6.3d|%e|%.3g|%g" 0 7 7 0.0 100000.0 100000.0}}',
        None,
        "|007|   007|0.000000e+00|1e+05|100000",
    ),
    (
        '{{printf "%v %v %v %v" nil .M .L true}} {{printf "%T %T %T %T %T" 1 1.5 "s" .L .M}}',
        {"M": {"a": [1, 2]}, "L": [None, "x"]},
        "<nil> map[a:[1 2]] [<nil> x] true int float64 string []interface {} map[string]interface {}",
    ),
    (
        '{{printf "%d %s" "str" 5}} {{printf "%d"}} {{printf "%d" 1 2}} {{printf "%v %s %d" .L .L .N}}',
        {"L": ["a", "b"], "N": [1, 2]},
        "%!d(string=str) %!s(int=5) %!d(MISSING) 1%!(EXTRA int=2) [a b] [a b] [1 2]",
    ),
    (
        '{{printf "%s" 1.5}} {{printf "%d" 1.5}} {{printf "%t" 1}} {{printf "%z" 1}} {{printf "%"}} {{printf "%s" nil}}',
        None,
        "%!s(float64=1.5) %!d(float64=1.5) %!t(int=1) %!z(int=1) %!(NOVERB) %!s(<nil>)",
    ),
    (
        '{{printf "%q" "tab\\there\\u0001é"}} {{printf "%x" "héllo"}} {{printf "%c|%q|%U" 233 233 233}}',
        None,
        "\"tab\\there\\x01é\" 68c3a96c6c6f é|'é'|U+00E9",
    ),
    (
        '{{printf "%10v|%-10v|" .L .L}}',
        {"L": ["a", "bb"]},
        "[         a         bb]|[a          bb        ]|",
    ),
    (
        '{{printf "%v" .F}} {{.F}} {{.G}} {{.H}}',
        {"F": -0.0, "G": 1.5e-300, "H": 2e300},
        "-0 -0 1.5e-300 2e+300",
    ),
]

# (template, message after the "template parsing error: " prefix), as Go words it
GO_PARSE_ERRORS = [
    ("{{foo}}", 'template: :1: function "foo" not defined'),
    ("{{.Name", "template: :1: unclosed action"),
    ("{{if .A}}x", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("{{else}}", "template: :1: unexpected {{else}}"),
    ("a\n{{if .A}}x{{else}}y{{else}}z{{end}}", "template: :2: expected end; found {{else}}"),
    ("{{$x}}", 'template: :1: undefined variable "$x"'),
    ("{{}}", "template: :1: missing value for command"),
    ("{{if}}x{{end}}", "template: :1: missing value for if"),
    ('{{"abc}}', "template: :1: unterminated quoted string"),
    ("{{`abc}}", "template: :1: unterminated raw quoted string"),
    ("{{/* abc }}", "template: :1: unclosed comment"),
    ("{{/* abc */ }}", "template: :1: comment ends before closing delimiter"),
    ("{{(.A}}", "template: :1: unclosed left paren"),
    ("{{.A)}}", 'template: :1: unexpected ")" in command'),
    ('{{.A | "x"}}', "template: :1: non executable command in pipeline stage 2"),
    ("{{break}}", "template: :1: {{break}} outside {{range}}"),
    ("{{with $a, $b := .}}{{end}}", "template: :1: too many declarations in with"),
    ("{{1a}}", 'template: :1: bad number syntax: "1a"'),
    ('{{"\\q"}}', "template: :1: invalid syntax"),
    ("{{'ab'}}", "template: :1: malformed character constant: 'ab'"),
    ("{{if .A}}{{else if .B}}", "template: :1: unexpected EOF"),
    ("{{true.A}}", 'template: :1: unexpected . after term "true"'),
    ("{{.A #}}", 'template: :1: unexpected "#" in operand'),
]

GO_EXEC_ERRORS = [
    (
        "{{len 1 2}}",
        None,
        'template: :1:2: executing "" at <len>: wrong number of args for len: want 1 got 2',
    ),
    (
        "{{index .L 5}}",
        {"L": [1, 2]},
        'template: :1:2: executing "" at <index .L 5>: error calling index: index out of range: 5',
    ),
    (
        '{{index .L "a"}}',
        {"L": [1, 2]},
        'template: :1:2: executing "" at <index .L "a">: error calling index: cannot index slice/array with type string',
    ),
    (
        "{{index .M 1}}",
        {"M": {"a": 1}},
        'template: :1:2: executing "" at <index .M 1>: error calling index: value has type int; should be string',
    ),
    (
        "{{index 5 1}}",
        None,
        'template: :1:2: executing "" at <index 5 1>: error calling index: can\'t index item of type int',
    ),
    (
        "{{len 3}}",
        None,
        'template: :1:2: executing "" at <len 3>: error calling len: len of type int',
    ),
    (
        "{{.A.B}}",
        {"A": None},
        'template: :1:4: executing "" at <.A.B>: nil pointer evaluating interface {}.B',
    ),
    (
        "{{.A.B.C}}",
        {"A": {"B": None}},
        'template: :1:4: executing "" at <.A.B.C>: nil pointer evaluating interface {}.C',
    ),
    (
        '{{eq 1 "a"}}',
        None,
        'template: :1:2: executing "" at <eq 1 "a">: error calling eq: incompatible types for comparison',
    ),
    (
        "{{lt true false}}",
        None,
        'template: :1:2: executing "" at <lt true false>: error calling lt: invalid type for comparison',
    ),
    (
        "{{.A 1}}",
        {"A": 1},
        'template: :1:2: executing "" at <.A>: A is not a method but has arguments',
    ),
    (
        "{{$x := 1}}{{$x 2}}",
        None,
        'template: :1:13: executing "" at <$x>: can\'t give argument to non-function $x',
    ),
    ("{{nil}}", None, 'template: :1:2: executing "" at <nil>: nil is not a command'),
    (
        "{{range .S}}{{end}}",
        {"S": "abc"},
        'template: :1:8: executing "" at <.S>: range can\'t iterate over abc',
    ),
    (
        "line1\nline2 {{index .L 9}}",
        {"L": []},
        'template: :2:8: executing "" at <index .L 9>: error calling index: index out of range: 9',
    ),
    (
        "{{printf}}",
        None,
        'template: :1:2: executing "" at <printf>: wrong number of args for printf: want at least 1 got 0',
    ),
    (
        "{{eq 1}}",
        None,
        'template: :1:2: executing "" at <eq 1>: error calling eq: missing argument for comparison',
    ),
    (
        "{{and}}",
        None,
        'template: :1:2: executing "" at <and>: wrong number of args for and: want at least 1 got 0',
    ),
    (
        "{{slice .L 3 1}}",
        {"L": [1, 2, 3, 4]},
        'template: :1:2: executing "" at <slice .L 3 1>: error calling slice: invalid slice index: 3 > 1',
    ),
]

# lines, and Go's text/tabwriter output with docker's settings (10, 1, 3, ' ', 0)
GO_TABWRITER = [
    (
        ["CONTAINER ID\tIMAGE\tNAMES", "abc\tbusybox\tweb", "abcdef123456\tx\ty"],
        "CONTAINER ID   IMAGE     NAMES\nabc            busybox   web\nabcdef123456   x         y\n",
    ),
    (
        ["a\tb\tc", "aa\tbbbbbbbbbbbbbbbbb", "x", "aaa\tb\tc\td"],
        "a         b         c\naa        bbbbbbbbbbbbbbbbb\nx\naaa       b         c         d\n",
    ),
    (
        ["aaaa\tbbb\td", "aa\tb\tdd", "a\t", "aa\tcccc\teee"],
        "aaaa      bbb       d\naa        b         dd\na         \naa        cccc      eee\n",
    ),
    (
        ["", "a\t\tb", "\t\t", "naïve\ty"],
        "\na                   b\n                    \nnaïve     y\n",
    ),
    (["no tabs here", "a\tb"], "no tabs here\na         b\n"),
    (["a\tb\t", "c\td\t"], "a         b         \nc         d         \n"),
]


def _error(template: str, data: object = None) -> str:
    with pytest.raises(UsageError) as info:
        render(template, data)
    return str(info.value)


@pytest.mark.parametrize("template, data, expected", GO_CASES)
def test_renders_as_go_does(template, data, expected):
    assert render(template, data) == expected


@pytest.mark.parametrize("template, expected", GO_PARSE_ERRORS)
def test_parse_errors_are_worded_as_go_and_docker_word_them(template, expected):
    assert _error(template) == "template parsing error: " + expected


@pytest.mark.parametrize("template, data, expected", GO_EXEC_ERRORS)
def test_execution_errors_name_line_column_and_node(template, data, expected):
    assert _error(template, data) == "template parsing error: " + expected


@pytest.mark.parametrize("lines, expected", GO_TABWRITER)
def test_tabwrite_aligns_as_go_tabwriter(lines, expected):
    assert tabwrite(lines) == expected


# --- where pbox follows docker's typed data rather than untyped Go maps


def test_none_prints_nil_and_an_absent_key_prints_no_value():
    # docker's nil pointers (e.g. .State.Health) print <nil>; an absent map key <no value>
    data = {"Health": None, "Labels": {}}
    assert render("{{.Health}}|{{.Labels.x}}|{{.Nope}}|{{.Nope.Deeper}}", data) == (
        "<nil>|<no value>|<no value>|<no value>"
    )
    assert (
        render("{{printf `%v` .Health}} {{print .Nope}} {{json .Nope}}", data) == "<nil> <nil> null"
    )


def test_index_of_an_absent_key_gives_the_zero_of_the_map_values():
    # docker's labels are map[string]string: index of a missing label is "", not <no value>
    labels = {"a": "x"}
    assert render('[{{index . "missing"}}]', labels) == "[]"
    assert render('[{{index . "missing"}}]', {}) == "[]"
    assert render('{{index . "b"}}', {"a": 3}) == "0"
    assert render('{{index . "b"}}', {"a": {"k": 1}}) == "<nil>"
    assert render('{{if index . "missing"}}set{{else}}unset{{end}}', labels) == "unset"


def test_json_keeps_the_order_of_the_keys_and_does_not_escape_html():
    # docker's json function uses an encoder with SetEscapeHTML(false)
    data = {"b": "<a&b>", "a": [1, 2.5, None, True], "c": '\u2028x\n\t\u0001"\\'}
    assert render("{{json .}}", data) == (
        '{"b":"<a&b>","a":[1,2.5,null,true],"c":"\\u2028x\\n\\t\\u0001\\"\\\\"}'
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123456789.0, "123456789"),
        (-0.5, "-0.5"),
        (2.0, "2"),
        (0.0, "0"),
        (12, "12"),
        ("é", '"é"'),
    ],
)
def test_json_numbers_as_go_marshals_them(value, expected):
    assert render("{{json .}}", value) == expected


def test_json_of_nan_prints_nothing_as_docker_does():
    assert render("[{{json .}}]", float("nan")) == "[]"


def test_join_accepts_any_list_and_none():
    assert render('{{join .Cmd " "}}|{{join .None ","}}|{{join .Mixed "-"}}', {
        "Cmd": ["sh", "-c"], "None": None, "Mixed": ["a", 1, None]}) == "sh -c||a-1-<nil>"  # fmt: skip


def test_numbers_of_either_kind_compare():
    assert render("{{eq .F 2}} {{lt .F 3}} {{ge 2 .F}}", {"F": 2.0}) == "true true true"


def test_range_over_an_integer_counts_as_go_1_22_does():
    assert render("{{range $i := 3}}{{$i}}{{end}}", None) == "012"


def test_header_names_default_to_words_in_capitals():
    assert default_header("ID") == "ID"
    assert default_header("CreatedAt") == "CREATED AT"
    assert default_header("IPAddress") == "IP ADDRESS"
    assert default_header("State.Status") == "STATE STATUS"
    assert default_header("RunningFor") == "RUNNING FOR"


# --- more of Go's semantics


def test_a_template_is_parsed_once_and_runs_on_many_rows():
    tpl = Template("{{.Name}}={{len .L}}")
    assert [tpl.execute({"Name": n, "L": [0] * i}) for i, n in enumerate("ab")] == ["a=0", "b=1"]
    assert tpl.execute({"Name": "c", "L": []}) == "c=0"  # no state leaks between runs


def test_variables_are_scoped_to_their_control_structure():
    assert _error("{{if true}}{{$x := 1}}{{end}}{{$x}}") == (
        'template parsing error: template: :1: undefined variable "$x"'
    )
    assert render("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", None) == "2"
    assert render("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", None) == "21"


def test_else_with_chains():
    tpl = Template("{{with .A}}a={{.}}{{else with .B}}b={{.}}{{else}}none{{end}}")
    assert [tpl.execute(d) for d in ({"A": 1}, {"B": 2}, {})] == ["a=1", "b=2", "none"]


def test_and_or_stop_at_the_deciding_argument():
    # the second argument would fail if it were evaluated
    assert (
        render("{{and .F (index .L 9)}}|{{or .T (index .L 9)}}", {"F": 0, "T": "t", "L": []})
        == "0|t"
    )


def test_range_over_a_map_goes_in_key_order_and_nested_range_sees_dollar():
    data = {"M": {"b": [1, 2], "a": [3]}, "Sep": ";"}
    assert render("{{range $k, $v := .M}}{{range $v}}{{$k}}{{.}}{{$.Sep}}{{end}}{{end}}", data) == (
        "a3;b1;b2;"
    )


def test_big_and_exotic_values_print_without_error():
    assert render("{{.}}", 2**70) == str(2**70)
    assert render("{{.}}", (1, "a")) == "[1 a]"
    assert render("{{.}}", {2: "b", 1: "a", "x": "y"}) == "map[1:a 2:b x:y]"
    assert render("{{.}}", float("inf")) == "+Inf"


def test_no_value_is_exported_for_callers_that_compare():
    assert repr(NO_VALUE) == "<no value>"


# --- docker's formats


ROWS = [
    {"ID": "3f4e5d6c7b8a", "Image": "busybox:latest", "Names": "web", "Size": 1234,
     "Status": "Up 2 hours", "Labels": {"a": "1"}, "Cmd": ["sh", "-c", "x"]},
    {"ID": "0123456789ab", "Image": "nginx", "Names": "a-much-longer-name", "Size": 5,
     "Status": "Exited (0) 3 days ago", "Labels": {}, "Cmd": []},
]  # fmt: skip
HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Names": "NAMES", "Size": "SIZE"}  # rest derived


# (format as a user types it, output) — outputs from docker's own formatter code in Go
@pytest.mark.parametrize(
    "fmt, expected",
    [
        (
            r"table {{.ID}}\t{{.Image}}\t{{.Names}}",
            "CONTAINER ID   IMAGE            NAMES\n"
            "3f4e5d6c7b8a   busybox:latest   web\n"
            "0123456789ab   nginx            a-much-longer-name\n",
        ),
        (r"{{.ID}}\t{{.Names}}", "3f4e5d6c7b8a\tweb\n0123456789ab\ta-much-longer-name\n"),
        ("  {{.Names}} ", "web\na-much-longer-name\n"),
        (r"{{.Names}}\n", "web\n\na-much-longer-name\n\n"),
        ("table {{.Names}}", "NAMES\nweb\na-much-longer-name\n"),
        (
            r"table {{upper .Names}}\t{{json .Labels}}\t{{.Size}}",
            "NAMES                LABELS      SIZE\n"
            'WEB                  {"a":"1"}   1234\n'
            "A-MUCH-LONGER-NAME   {}          5\n",
        ),
        (
            r"table {{.ID}}: {{.Names}}\n\t{{.Status}}",
            "CONTAINER ID: NAMES\n"
            "          STATUS\n"
            "3f4e5d6c7b8a: web\n"
            "          Up 2 hours\n"
            "0123456789ab: a-much-longer-name\n"
            "          Exited (0) 3 days ago\n",
        ),
        (
            'table {{printf "%-20s" .Names}}|{{.Size}}',
            "NAMES               |SIZE\nweb                 |1234\na-much-longer-name  |5\n",
        ),
    ],
)
def test_format_rows_as_docker_prints_them(fmt, expected):
    assert format_rows(fmt, ROWS, HEADERS) == expected


def test_table_of_no_rows_prints_the_header():
    assert format_rows(r"table {{.ID}}\t{{.Names}}", [], HEADERS) == "CONTAINER ID   NAMES\n"


def test_header_of_a_field_without_a_given_name_is_derived_from_it():
    rows = [{"CreatedAt": "today", "State": {"Status": "up"}}]
    assert format_rows(r"table {{.CreatedAt}}\t{{.State.Status}}", rows, {}) == (
        "CREATED AT   STATE STATUS\ntoday        up\n"
    )


def test_header_functions_leave_the_header_alone():
    rows = [{"Name": "Web", "L": ["x", "y"]}]
    out = format_rows(r'table {{lower .Name}}\t{{join .L ","}}', rows, {"Name": "Name", "L": "Els"})
    assert out == "Name      Els\nweb       x,y\n"


def test_json_format_prints_one_object_per_row():
    out = format_rows("json", ROWS[:1], HEADERS)
    assert out == (
        '{"ID":"3f4e5d6c7b8a","Image":"busybox:latest","Names":"web","Size":1234,'
        '"Status":"Up 2 hours","Labels":{"a":"1"},"Cmd":["sh","-c","x"]}\n'
    )


def test_default_replaces_an_empty_format_or_a_bare_table():
    default = r"table {{.ID}}\t{{.Names}}"
    expected = format_rows(default, ROWS, HEADERS)
    assert format_rows("table", ROWS, HEADERS, default=default) == expected
    assert format_rows("", ROWS, HEADERS, default=default) == expected
    assert format_rows("{{.ID}}", ROWS, HEADERS, default=default) == "3f4e5d6c7b8a\n0123456789ab\n"


def test_a_bad_row_template_fails_even_in_a_table():
    with pytest.raises(UsageError, match=r"at <index \.Cmd 5>: error calling index"):
        format_rows("table {{index .Cmd 5}}", ROWS, HEADERS)
    with pytest.raises(UsageError, match='function "nope" not defined'):
        format_rows("table {{nope}}", [], HEADERS)


def test_a_field_a_row_lacks_is_an_error_as_in_docker():
    # docker's rows are typed contexts (structs): .Nope fails, while a map's absent key
    # inside a row still gives <no value>
    with pytest.raises(UsageError, match=r"can't evaluate field Nope in type \*formatter.X"):
        format_rows("{{.ID}} {{.Nope}}", ROWS, HEADERS, row_type="*formatter.X")
    rows = [{"ID": "a", "L": {"k": "v"}}]
    assert format_rows("{{.ID}} {{.L.k}} {{.L.nope}} {{json .}}", rows) == (
        'a v <no value> {"ID":"a","L":{"k":"v"}}\n')


def test_tabwrite_counts_wide_characters_twice_as_docker_does():
    # docker's tabwriter measures cells with go-runewidth, not in runes
    assert tabwrite(["日本語\tx", "naïve\ty", "e\u0301\tz"]) == (
        "日本語    x\nnaïve     y\ne\u0301         z\n"
    )


def test_tabwrite_takes_other_settings():
    assert tabwrite(["a\tb", "ccc\td"], minwidth=0, padding=1) == "a   b\nccc d\n"


# --- robustness


FRAGMENTS = [
    "{{", "}}", "{{-", " -}}", ".A", ".B", ".L", ".M", ".M.k", "$", "$x", ":=", "=", "|", "(", ")",
    "if", "else", "end", "range", "with", "break", "continue", "index", "len", "printf", "slice",
    '"%d %s %v %5.2f %x %q %#U"', "eq", "lt", "and", "or", "not", "json", "join", "split", "upper",
    "title", "print", "nil", "true", "1", "-2", "1.5", "'a'", "`raw`", '"s"', ",", " ", "x", "\n",
    "/*", "*/", "0x1F", "1e3", ".", "#", "é", "\\", '"', "pad", "truncate", "{{.A}}", "{{end}}",
    "{{else}}", "{{range .L}}", "{{if .A}}", "{{$x := .L}}", "{{with .M}}", "{{else if .B}}",
]  # fmt: skip


def test_bad_templates_raise_usage_errors_only():
    data = {"A": 1, "B": "b", "L": [1, "two", None, [3], -2.5], "M": {"k": "v", "n": None}}
    rng = random.Random(20240601)
    outcomes = set()
    for _ in range(4000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 14)))
        try:
            render(text, data)
            outcomes.add("ok")
        except UsageError as e:
            assert str(e).startswith("template parsing error: template: :"), text
            outcomes.add("error")
    assert outcomes == {"ok", "error"}


def test_deep_nesting_is_a_usage_error():
    with pytest.raises(UsageError):
        render("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", None)


def test_import_is_light():
    code = "import sys, pbox.gotemplate; print(sorted({'unicodedata', 'decimal', 'click', 'requests'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
