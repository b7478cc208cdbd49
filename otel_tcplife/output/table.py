"""The classic tcplife table, byte for byte (default, -w wide, -s CSV, -T, -t)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence, TextIO

from ..session import Session

HEADER = ("PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "TX_KB", "RX_KB", "MS")

# (header format, row format) with an IP slot after COMM.
FORMATS = {
    "default": (
        "%-5s %-10.10s %s%-15s %-5s %-15s %-5s %5s %5s %s",
        "%-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %.2f",
    ),
    "wide": (
        "%-5s %-16.16s %-2s %-39s %-5s %-39s %-5s %6s %6s %s",
        "%-5d %-16.16s %-2s %-39s %-5s %-39s %-5d %6d %6d %.2f",
    ),
    "csv": (
        "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s",
        "%d,%s,%s,%s,%s,%s,%d,%d,%d,%.2f",
    ),
}


@dataclass(frozen=True)
class TableStyle:
    wide: bool = False
    csv: bool = False  # overrides wide
    wall_time: bool = False  # -T: TIME column, local HH:MM:SS at print time
    timestamp: bool = False  # -t: TIME(s) column, seconds since the first row


class TableWriter:
    def __init__(self, stream: TextIO, style: TableStyle) -> None:
        self.stream = stream
        self.style = style
        kind = "csv" if style.csv else "wide" if style.wide else "default"
        self.header_format, self.row_format = FORMATS[kind]
        self.show_ip = style.csv or style.wide
        self.first_close_us: int | None = None

    def write_header(self) -> None:
        s = self.style
        prefix = ""
        if s.wall_time:
            prefix += "TIME," if s.csv else "%-8s " % "TIME"
        if s.timestamp:
            prefix += "TIME(s)," if s.csv else "%-9s " % "TIME(s)"
        ip = "IP" if self.show_ip else ""
        name, comm, *rest = HEADER
        self.stream.write(prefix + self.header_format % (name, comm, ip, *rest) + "\n")
        self.stream.flush()

    def write(self, sessions: Sequence[Session]) -> None:
        if not sessions:
            return
        # The hot path: one comprehension, no call per row.
        row_format = self.row_format
        ips = {4: "4", 6: "6"} if self.show_ip else {4: "", 6: ""}
        lines = [row_format % (pid, comm, ips.get(family, ""), laddr, lport, raddr, rport,
                               tx // 1024, rx // 1024, (close - birth) // 1000 / 1000)
                 for pid, comm, family, laddr, lport, raddr, rport, tx, rx, birth, close, _, _, _, _
                 in sessions]
        if self.style.wall_time or self.style.timestamp:
            clock = time.strftime("%H:%M:%S")  # one reading per batch
            lines = [self._prefix(session, clock) + line for session, line in zip(sessions, lines)]
        lines.append("")
        self.stream.write("\n".join(lines))
        self.stream.flush()

    def _prefix(self, session: Session, clock: str) -> str:
        """-T: TIME (clock: local HH:MM:SS, now); -t: TIME(s), seconds since the first row's close."""
        s = self.style
        prefix = ""
        if s.wall_time:
            prefix = clock + "," if s.csv else "%-8s " % clock
        if s.timestamp:
            close_us = session.close_ns // 1000
            if self.first_close_us is None:
                self.first_close_us = close_us
            delta = (close_us - self.first_close_us) / 1000000
            prefix += "%.6f," % delta if s.csv else "%-9.6f " % delta
        return prefix
