from __future__ import annotations

import os
import stat

from pbox.rootless import idmap
from pbox.rootless.idmap import IdMapping, IdRange, SubRange

SUBUID = """\
# comment
alice:100000:65536
1001:200000:1000
bob:300000:65536
broken line
carol:x:10
dave:5:0
alice:400000:10
"""


def test_parse_skips_comments_and_malformed_lines():
    entries = idmap.parse_subid(SUBUID)
    assert [e.owner for e in entries] == ["alice", "1001", "bob", "alice"]
    assert entries[0] == SubRange("alice", 100000, 65536)


def test_ranges_by_name_and_by_uid():
    entries = idmap.parse_subid(SUBUID)
    got = idmap.ranges_for(entries, "alice", 1001)
    assert [(r.start, r.count) for r in got] == [(100000, 65536), (200000, 1000), (400000, 10)]
    assert idmap.ranges_for(entries, "bob", 1002) == [SubRange("bob", 300000, 65536)]
    assert idmap.ranges_for(entries, None, 1001) == [SubRange("1001", 200000, 1000)]
    assert idmap.ranges_for(entries, "nobody", 7) == []


def test_read_subid_missing_file_means_no_range(tmp_path):
    assert idmap.read_subid_ranges("alice", 1001, str(tmp_path / "absent")) == []
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n")
    assert idmap.read_subid_ranges("alice", 1001, str(f)) == [SubRange("alice", 100000, 65536)]


def test_build_ranges_lays_ranges_end_to_end():
    subs = [SubRange("a", 100000, 65536), SubRange("a", 400000, 10)]
    assert idmap.build_ranges(1001, subs) == (
        IdRange(0, 1001, 1),
        IdRange(1, 100000, 65536),
        IdRange(65537, 400000, 10),
    )


def test_build_ranges_skips_overlaps_and_own_id():
    subs = [
        SubRange("a", 100000, 100),
        SubRange("a", 100050, 100),  # overlaps the first
        SubRange("a", 1000, 5),  # contains the user's own id 1001
        SubRange("a", 100000, 100),  # duplicate
    ]
    assert idmap.build_ranges(1001, subs) == (IdRange(0, 1001, 1), IdRange(1, 100000, 100))


def test_subuid_mapping_translation():
    m = IdMapping.subuid(1001, 1001, [SubRange("a", 100000, 65536)], [SubRange("a", 100000, 65536)])
    assert m.mode == idmap.MODE_SUBUID and m.needs_userns
    assert m.to_host_uid(0) == 1001
    assert m.to_host_uid(1) == 100000
    assert m.to_host_uid(1000) == 100999
    assert m.to_host_uid(65536) == 165535
    assert m.to_host_uid(65537) is None
    assert m.to_container_uid(100999) == 1000
    assert m.to_container_uid(1001) == 0
    assert m.to_container_uid(5) is None
    assert m.to_host_gid(1000) == 100999
    assert m.uid_count == 65537
    assert m.uid_map_text() == "0 1001 1\n1 100000 65536\n"


def test_newuidmap_arguments():
    m = IdMapping.subuid(
        1001,
        1002,
        [SubRange("a", 100000, 65536)],
        [SubRange("a", 200000, 10)],
        newuidmap="/usr/bin/newuidmap",
        newgidmap="/usr/bin/newgidmap",
    )
    assert m.newuidmap_args(42) == [
        "/usr/bin/newuidmap",
        "42",
        "0",
        "1001",
        "1",
        "1",
        "100000",
        "65536",
    ]
    assert m.newgidmap_args(42) == [
        "/usr/bin/newgidmap",
        "42",
        "0",
        "1002",
        "1",
        "1",
        "200000",
        "10",
    ]


def test_single_mapping():
    m = IdMapping.single(1002, 1003)
    assert m.mode == idmap.MODE_SINGLE
    assert m.uid_map_text() == "0 1002 1\n"
    assert m.gid_map_text() == "0 1003 1\n"
    assert m.to_host_uid(0) == 1002
    assert m.to_host_uid(1) is None
    assert m.uid_count == 1


def test_host_mapping_is_identity():
    m = IdMapping.host()
    assert not m.needs_userns
    assert m.to_host_uid(1234) == 1234
    assert m.to_container_gid(99) == 99


def _fake_helper(path, mode):
    path.write_text("#!/bin/sh\n")
    os.chmod(path, mode)
    return path


def test_mapping_for_picks_mode(tmp_path):
    sub = tmp_path / "subuid"
    sub.write_text("alice:100000:65536\n")
    kw = dict(subuid_file=str(sub), subgid_file=str(sub))
    m = idmap.mapping_for(
        1001, 1001, "alice", newuidmap="/x/newuidmap", newgidmap="/x/newgidmap", **kw
    )
    assert m.mode == idmap.MODE_SUBUID
    assert m.newuidmap == "/x/newuidmap"
    # no helper -> single
    assert (
        idmap.mapping_for(1001, 1001, "alice", newuidmap=None, newgidmap=None, **kw).mode
        == "single"
    )
    # no range -> single
    assert idmap.mapping_for(1002, 1002, "bob", newuidmap="u", newgidmap="g", **kw).mode == "single"
    # root -> host
    assert idmap.mapping_for(0, 0, "root", newuidmap="u", newgidmap="g", **kw).mode == "host"


def test_find_newidmap_requires_privilege(tmp_path):
    plain = _fake_helper(tmp_path / "newuidmap", 0o755)
    assert idmap.find_newidmap("newuidmap", path=str(tmp_path)) is None
    assert idmap.find_newidmap("absent-helper", path=str(tmp_path)) is None
    plain.chmod(0o755 | stat.S_ISUID)
    expect = str(plain) if plain.stat().st_uid == 0 else None
    assert idmap.find_newidmap("newuidmap", path=str(tmp_path)) == expect


def test_squash_notice_names_the_fix():
    text = idmap.squash_notice("nosub")
    assert "usermod --add-subuids" in text and "nosub" in text and "/etc/subuid" in text
