"""The classic table formats, checked against rows of the upstream tcplife examples."""

from __future__ import annotations

import io
import re

from otel_tcplife.output.table import TableStyle, TableWriter
from otel_tcplife.session import Session


def session(pid=22598, comm="curl", family=4, laddr="100.66.3.172", lport=61620, raddr="52.205.89.26",
            rport=80, tx=0, rx=1 * 1024 + 1023, birth_us=1_000_000, span_us=91_790) -> Session:
    birth_ns = birth_us * 1000
    return Session(pid, comm, family, laddr, lport, raddr, rport, tx, rx, birth_ns,
                   birth_ns + span_us * 1000 + 999, 1, 0, 5, 1)


def render(style: TableStyle, *sessions: Session) -> list[str]:
    out = io.StringIO()
    writer = TableWriter(out, style)
    writer.write_header()
    writer.write(sessions)
    return out.getvalue().split("\n")


def test_default_header_and_row_match_the_upstream_example():
    lines = render(TableStyle(), session())
    assert lines[0] == "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS"
    assert lines[1] == "22598 curl       100.66.3.172    61620 52.205.89.26    80        0     1 91.79"
    assert lines[2] == ""  # every row ends with a newline


def test_csv_with_both_times_matches_the_upstream_example():
    first = session(pid=7335, comm="recordProgramSt", laddr="127.0.0.1", lport=48098, raddr="127.0.0.1",
                    rport=28527, rx=0, span_us=260)
    later = first._replace(close_ns=first.close_ns + 1_500_000_000)
    lines = render(TableStyle(csv=True, wall_time=True, timestamp=True), first, later)
    assert lines[0] == "TIME,TIME(s),PID,COMM,IP,LADDR,LPORT,RADDR,RPORT,TX_KB,RX_KB,MS"
    assert re.fullmatch(r"\d\d:\d\d:\d\d,0\.000000,7335,recordProgramSt,4,127\.0\.0\.1,48098,"
                        r"127\.0\.0\.1,28527,0,0,0\.26", lines[1]), lines[1]
    assert lines[2].split(",")[1] == "1.500000"


def test_csv_never_truncates_or_quotes_comm():
    lines = render(TableStyle(csv=True), session(comm="a,b c-long-name-x"))
    assert lines[1].startswith("22598,a,b c-long-name-x,4,")


def test_wide_columns_fit_ipv6():
    v6 = session(family=6, laddr="2001:db8::1", raddr="2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", comm="x" * 20)
    lines = render(TableStyle(wide=True), v6)
    assert lines[0] == ("PID   COMM             IP LADDR                                   LPORT "
                        "RADDR                                   RPORT  TX_KB  RX_KB MS")
    assert lines[1] == ("22598 xxxxxxxxxxxxxxxx 6  2001:db8::1                             61620 "
                        "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe  80         0      1 91.79")


def test_csv_overrides_wide():
    assert render(TableStyle(csv=True, wide=True), session())[0].startswith("PID,COMM,IP,")


def test_time_columns_come_first_time_then_timestamp():
    lines = render(TableStyle(wall_time=True, timestamp=True), session())
    assert lines[0].startswith("TIME     TIME(s)   PID   COMM")
    assert re.match(r"\d\d:\d\d:\d\d 0\.000000  22598 curl ", lines[1]), lines[1]


def test_kilobytes_are_truncated_and_ms_has_two_decimals():
    lines = render(TableStyle(csv=True), session(tx=1023, rx=2048, span_us=1234))
    assert lines[1].endswith(",0,2,1.23")
