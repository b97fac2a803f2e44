from pbox import humanize


def test_human_size_matches_go_units():
    assert humanize.human_size(0) == "0B"
    assert humanize.human_size(999) == "999B"
    assert humanize.human_size(1000) == "1kB"
    assert humanize.human_size(4261550) == "4.26MB"
    assert humanize.human_size(72_800_000) == "72.8MB"
    assert humanize.human_size(1_050_000_000) == "1.05GB"


def test_bytes_size():
    assert humanize.bytes_size(1536) == "1.5KiB"
    assert humanize.bytes_size(1024 * 1024 * 3) == "3MiB"


def test_human_duration_table():
    cases = [
        (0.2, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (61 * 5, "5 minutes"),
        (3600, "About an hour"),
        (3600 * 5, "5 hours"),
        (3600 * 47, "47 hours"),
        (3600 * 24 * 3, "3 days"),
        (3600 * 24 * 21, "3 weeks"),
        (3600 * 24 * 90, "3 months"),
        (3600 * 24 * 365 * 3, "3 years"),
    ]
    for seconds, text in cases:
        assert humanize.human_duration(seconds) == text, seconds


def test_rfc3339_round_trip_and_nanoseconds():
    assert humanize.parse_rfc3339("1970-01-01T00:00:10Z") == 10.0
    assert humanize.parse_rfc3339("1970-01-01T00:00:10.123456789Z") == 10.123456
    assert humanize.parse_rfc3339("1970-01-01T01:00:10+01:00") == 10.0
    assert humanize.parse_rfc3339("") == 0.0
    assert humanize.parse_rfc3339("garbage") == 0.0
    assert humanize.rfc3339(10.5) == "1970-01-01T00:00:10.5Z"
    assert humanize.rfc3339(10) == "1970-01-01T00:00:10Z"
    assert humanize.since(100, now=160) == "About a minute ago"
