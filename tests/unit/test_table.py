"""The classic table formats, checked against rows of the upstream tcplife examples and, for many
random events, against the classic tool's one-format rows."""

from __future__ import annotations

import io
import random
import re
import socket

from otel_tcplife import abi, caches
from otel_tcplife.config import TableStyle
from otel_tcplife.output.table import TableWriter

# The classic tool's row formats (one % for the whole row, the IP slot after COMM).
CLASSIC_ROWS = {
    TableStyle(): "%-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %.2f",
    TableStyle(wide=True): "%-5d %-16.16s %-2s %-39s %-5s %-39s %-5d %6d %6d %.2f",
    TableStyle(csv=True): "%d,%s,%s,%s,%s,%s,%d,%d,%d,%.2f",
}


def raw_address(text: str) -> bytes:
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return socket.inet_aton(text) + bytes(12)


def event(pid=22598, comm=b"curl", family=4, laddr="100.66.3.172", lport=61620, raddr="52.205.89.26",
          rport=80, tx=0, rx=1 * 1024 + 1023, birth_us=1_000_000, span_us=91_790, srtt_us=1234, rtt_min_us=456,
          retransmits=0, closed_by=abi.CLOSED_BY_LOCAL, reset=abi.RESET_NONE, oldstate=5) -> tuple:
    """An abi.EVENT tuple, as the probe reads it."""
    birth_ns = birth_us * 1000
    return abi.EVENT.unpack(abi.pack_event(
        birth_ns=birth_ns, close_ns=birth_ns + span_us * 1000 + 999, tx_bytes=tx, rx_bytes=rx,
        saddr=raw_address(laddr), daddr=raw_address(raddr), pid=pid, error=0, sport=lport, dport=rport,
        family=family, role=abi.ROLE_CLIENT, oldstate=oldstate, owner=abi.OWNER_CONNECT, comm=comm,
        srtt_us=srtt_us, rtt_min_us=rtt_min_us, retransmits=retransmits, closed_by=closed_by, reset=reset,
        cgroup_id=1, start_ns=5_000_000, span_ids=bytes(32)))


def fields(event: tuple) -> dict:
    return dict(zip(abi.EVENT_NAMES, event))


def render(style: TableStyle, *events: tuple) -> list[str]:
    out = io.StringIO()
    writer = TableWriter(out, style)
    writer.write_header()
    writer.write(events)
    return out.getvalue().split("\n")


def test_default_header_and_row_match_the_upstream_example():
    lines = render(TableStyle(), event())
    assert lines[0] == "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS"
    assert lines[1] == "22598 curl       100.66.3.172    61620 52.205.89.26    80        0     1 91.79"
    assert lines[2] == ""  # every row ends with a newline


def test_csv_with_both_times_matches_the_upstream_example():
    first = event(pid=7335, comm=b"recordProgramSt", laddr="127.0.0.1", lport=48098, raddr="127.0.0.1",
                  rport=28527, rx=0, span_us=260)
    later = abi.EVENT.unpack(abi.pack_event(**{**fields(first), "close_ns": fields(first)["close_ns"] + 1_500_000_000}))
    lines = render(TableStyle(csv=True, wall_time=True, timestamp=True), first, later)
    assert lines[0] == "TIME,TIME(s),PID,COMM,IP,LADDR,LPORT,RADDR,RPORT,TX_KB,RX_KB,MS"
    assert re.fullmatch(r"\d\d:\d\d:\d\d,0\.000000,7335,recordProgramSt,4,127\.0\.0\.1,48098,"
                        r"127\.0\.0\.1,28527,0,0,0\.26", lines[1]), lines[1]
    assert lines[2].split(",")[1] == "1.500000"


def test_csv_never_truncates_or_quotes_comm():
    lines = render(TableStyle(csv=True), event(comm=b"a,b c-long-name"))
    assert lines[1].startswith("22598,a,b c-long-name,4,")


def test_wide_columns_fit_ipv6():
    v6 = event(family=6, laddr="2001:db8::1", raddr="2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", comm=b"x" * 16)
    lines = render(TableStyle(wide=True), v6)
    assert lines[0] == ("PID   COMM             IP LADDR                                   LPORT "
                        "RADDR                                   RPORT  TX_KB  RX_KB MS")
    assert lines[1] == ("22598 xxxxxxxxxxxxxxxx 6  2001:db8::1                             61620 "
                        "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe  80         0      1 91.79")


def test_csv_overrides_wide():
    assert render(TableStyle(csv=True, wide=True), event())[0].startswith("PID,COMM,IP,")


def test_time_columns_come_first_time_then_timestamp():
    lines = render(TableStyle(wall_time=True, timestamp=True), event())
    assert lines[0].startswith("TIME     TIME(s)   PID   COMM")
    assert re.match(r"\d\d:\d\d:\d\d 0\.000000  22598 curl ", lines[1]), lines[1]


def test_kilobytes_are_truncated_and_ms_has_two_decimals():
    lines = render(TableStyle(csv=True), event(tx=1023, rx=2048, span_us=1234))
    assert lines[1].endswith(",0,2,1.23")


def test_the_same_raw_bytes_are_shown_by_family():
    # 0.0.0.0 padded to 16 bytes is also ::, and 127.0.0.1 is 7f00:1::
    raw = socket.inet_aton("127.0.0.1") + bytes(12)
    v4 = event(family=4, laddr="0.0.0.0", raddr="127.0.0.1")
    v6 = event(family=6, laddr="::", raddr="7f00:1::")
    assert all((fields(e)["saddr"], fields(e)["daddr"]) == (bytes(16), raw) for e in (v4, v6))
    for _ in range(2):  # the second time from the caches
        rows = [line.split(",") for line in render(TableStyle(csv=True), v4, v6, v4)[1:-1]]
        assert [row[2:6:] for row in rows] == [["4", "0.0.0.0", "61620", "127.0.0.1"],
                                               ["6", "::", "61620", "7f00:1::"],
                                               ["4", "0.0.0.0", "61620", "127.0.0.1"]]


def test_rows_equal_the_classic_formats_for_random_events(monkeypatch):
    """Many events, with values at the columns' widths and beyond, durations that round either
    way, names that are cut, not UTF-8 or empty; the caches are kept small so they fill and clear."""
    monkeypatch.setattr(caches, "CACHE_LIMIT", 50)
    rng = random.Random(5)
    addresses = ["127.0.0.1", "10.1.2.3", "255.255.255.255", "0.0.0.0", "::", "::1", "fe80::1",
                 "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", "::ffff:10.0.0.1"]
    comms = [b"curl", b"", b"x" * 16, b"nginx\0worker", b"caf\xc3\xa9", b"bad\xff\xfe", b"a,b c"]
    events = []
    for _ in range(3000):
        family = rng.choice([4, 6])
        pool = [a for a in addresses if (":" in a) == (family == 6)]
        events.append(event(
            pid=rng.choice([1, 99999, 100000, 4294967295, rng.randrange(1, 1 << 22)]),
            comm=rng.choice(comms), family=family, laddr=rng.choice(pool), raddr=rng.choice(pool),
            lport=rng.choice([0, 9999, 10000, 65535, rng.randrange(1 << 16)]),
            rport=rng.choice([0, 80, 65535, rng.randrange(1 << 16)]),
            tx=rng.choice([0, 1023, 1024, 10**11, rng.randrange(1 << 40)]),
            rx=rng.choice([0, 2047, 99999 * 1024, rng.randrange(1 << 30)]),
            span_us=rng.choice([0, 5, 15, 1005, 2675, 999_995, rng.randrange(10**7), rng.randrange(10**11)])))
    for style, classic in CLASSIC_ROWS.items():
        expected = []
        for e in map(fields, events):
            text = socket.AF_INET if e["family"] == 4 else socket.AF_INET6
            size = 4 if e["family"] == 4 else 16
            expected.append(classic % (
                e["pid"], e["comm"].split(b"\0")[0].decode("utf-8", "replace"),
                "" if style == TableStyle() else e["family"], socket.inet_ntop(text, e["saddr"][:size]), e["sport"],
                socket.inet_ntop(text, e["daddr"][:size]), e["dport"], e["tx_bytes"] // 1024, e["rx_bytes"] // 1024,
                float((e["close_ns"] - e["birth_ns"]) // 1000) / 1000))
        out = io.StringIO()
        writer = TableWriter(out, style)
        writer.write(events)
        assert out.getvalue().split("\n")[:-1] == expected
        assert all(len(cache) <= 50 for cache in (writer.processes, writer.ipv4, writer.ipv6,
                                                   writer.kilobytes, writer.milliseconds))


# -x: the session's wire facts after MS, which is then padded so that they line up.
EXTENDED_HEADER = "MS          RTT_MS MINRTT_MS RETRANS CLOSED_BY RESET    OLDSTATE"


def test_extended_columns_follow_ms_in_every_style():
    fields = dict(srtt_us=1234, rtt_min_us=456, retransmits=7, closed_by=abi.CLOSED_BY_PEER, oldstate=9)
    lines = render(TableStyle(extended=True), event(**fields))
    classic = render(TableStyle(), event(**fields))
    assert lines[0] == classic[0][:-2] + EXTENDED_HEADER
    assert lines[1] == classic[1][:-5] + "91.79        1.234     0.456       7 peer      -        LAST_ACK"
    wide = render(TableStyle(extended=True, wide=True), event(**fields))
    assert wide[0].endswith(" RX_KB " + EXTENDED_HEADER)
    assert wide[1].endswith("      1 91.79        1.234     0.456       7 peer      -        LAST_ACK")
    csv = render(TableStyle(extended=True, csv=True, wall_time=True, timestamp=True), event(**fields))
    assert csv[0] == ("TIME,TIME(s),PID,COMM,IP,LADDR,LPORT,RADDR,RPORT,TX_KB,RX_KB,"
                      "MS,RTT_MS,MINRTT_MS,RETRANS,CLOSED_BY,RESET,OLDSTATE")
    assert csv[1].endswith(",80,0,1,91.79,1.234,0.456,7,peer,,LAST_ACK")


def test_extended_columns_show_what_a_session_lacks_as_a_dash():
    """A failed connect: no RTT sample, nobody closed; a reset; a long duration keeps its width."""
    lines = render(TableStyle(extended=True), event(srtt_us=0, rtt_min_us=0, closed_by=0, reset=abi.RESET_RECEIVED,
                                                    oldstate=2, span_us=123_456_789, retransmits=123456),
                   event(closed_by=abi.CLOSED_BY_LOCAL, reset=abi.RESET_SENT, oldstate=1))
    assert lines[1].endswith("     1 123456.79        -         -  123456 -         received SYN_SENT")
    assert lines[2].endswith("     1 91.79        1.234     0.456       0 local     sent     ESTABLISHED")
    assert lines[2].index("ESTABLISHED") == lines[0].index("OLDSTATE")  # lined up while MS fits its width
    csv = render(TableStyle(extended=True, csv=True), event(srtt_us=0, rtt_min_us=0, closed_by=0, oldstate=2))
    assert csv[1].endswith(",91.79,,,0,,,SYN_SENT")
