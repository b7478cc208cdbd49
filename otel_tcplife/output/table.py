"""The classic tcplife table, byte for byte (default, -w wide, -s CSV, -T, -t); with -x, the
session's wire facts in extra columns after MS.

Rows are made straight from the probe's event tuples, column by column from caches of
formatted text: a row is nine lookups. One %-format per row of decoded Sessions took twice the
time. The loop over the events names their fields as abi.py does (it is compiled from ROW_LOOP
for the fields the events hold: row_function).
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Sequence, TextIO

from .. import abi
from ..abi import comm_text
from ..contract import closer_name, reset_name, tcp_state_name
from ..caches import Formatted, address_caches, port_cache
from ..codegen import compile_function, generated_filename
from ..config import TableStyle

HEADER = ("PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "TX_KB", "RX_KB", "MS")

# Header format, with an IP slot after COMM.
HEADER_FORMATS = {
    "default": "%-5s %-10.10s %s%-15s %-5s %-15s %-5s %5s %5s %s",
    "wide": "%-5s %-16.16s %-2s %-39s %-5s %-39s %-5s %6s %6s %s",
    "csv": "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s",
}
# A row's columns, each with the separator after it: (PID and COMM, IP, an address, a port,
# a KB count, MS). Put together, the classic row formats, e.g. by default
# "%-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %.2f" with an empty IP.
ROW_COLUMNS = {
    "default": ("%-5d %-10.10s ", "", "%-15s ", "%-5d ", "%5d ", "%.2f"),
    "wide": ("%-5d %-16.16s ", "%-2s ", "%-39s ", "%-5d ", "%6d ", "%.2f"),
    "csv": ("%d,%s,", "%s,", "%s,", "%d,", "%d,", "%.2f"),
}


# -x: columns after MS (MS then padded, as the others, so that they line up). Each column's format
# with the separator before it, and the text of a value the session lacks ("-", CSV: empty).
EXTENDED_HEADER = ("RTT_MS", "MINRTT_MS", "RETRANS", "CLOSED_BY", "RESET", "OLDSTATE")
EXTENDED_MS = {"default": ("%-9s", "%-9.2f"), "wide": ("%-9s", "%-9.2f"), "csv": ("%s", "%.2f")}  # header, row
ALIGNED_COLUMNS = (" %8s", " %9s", " %7s", " %-9s", " %-8s", " %s")
EXTENDED_COLUMNS = {"default": (ALIGNED_COLUMNS, "-"), "wide": (ALIGNED_COLUMNS, "-"), "csv": ((",%s",) * 6, "")}

# The hot path: one loop of cache lookups, no call per row. EVENT_FIELDS becomes the fields the
# events hold (row_function).
ROW_LOOP = """\
def rows(events, processes, v4, v6, ports, kilobytes, milliseconds, extended):
    lines = []
    append = lines.append
    rtts, min_rtts, retransmit_counts, closers, resets, states = extended
    for EVENT_FIELDS in events:
        ip, addresses = v4 if family == 4 else v6
        append(f"{processes[pid, comm]}{ip}{addresses[saddr]}{ports[sport]}{addresses[daddr]}{ports[dport]}"
               f"{kilobytes[tx_bytes // 1024]}{kilobytes[rx_bytes // 1024]}"
               f"{milliseconds[(close_ns - birth_ns) // 1000]}"EXTENDED)
    return lines
"""
EXTENDED_PARTS = ('\n               f"{rtts[srtt_us]}{min_rtts[rtt_min_us]}{retransmit_counts[retransmits]}"'
                  '\n               f"{closers[closed_by]}{resets[reset]}{states[oldstate]}"')
# The event fields the rows show; with -x, these too.
ROW_FIELDS = abi.event_fields(("pid", "comm", "family", "saddr", "sport", "daddr", "dport", "tx_bytes", "rx_bytes",
                               "birth_ns", "close_ns"))
EXTENDED_FIELDS = abi.event_fields(("srtt_us", "rtt_min_us", "retransmits", "closed_by", "reset", "oldstate"))


@functools.lru_cache(maxsize=None)
def row_function(extended: bool, fields: tuple[str, ...] = abi.EVENT_NAMES) -> Callable:
    """The loop making rows (with -x: extended) from events holding these fields."""
    source = ROW_LOOP.replace("EVENT_FIELDS", ", ".join(fields)).replace("EXTENDED", EXTENDED_PARTS if extended else "")
    return compile_function(source, "rows", {}, generated_filename(__name__, "rows_extended" if extended else "rows"))


row_function(False), row_function(True)  # made as the module loads


class TableWriter:
    def __init__(self, stream: TextIO, style: TableStyle) -> None:
        self.stream = stream
        self.style = style
        self.kind = "csv" if style.csv else "wide" if style.wide else "default"
        process, ip, address, port, kilobytes, ms = ROW_COLUMNS[self.kind]
        self.processes = Formatted(lambda key: process % (key[0], comm_text(key[1])))  # (pid, raw comm)
        self.ip4, self.ip6 = (ip % "4", ip % "6") if ip else ("", "")
        self.ipv4, self.ipv6 = address_caches(lambda text: address % text)
        self.ports = port_cache(lambda number: port % number)
        self.kilobytes = Formatted(lambda count: kilobytes % count)
        if style.extended:
            ms = EXTENDED_MS[self.kind][1]
        self.milliseconds = Formatted(lambda us: ms % (us / 1000))  # the classic float(us) / 1000
        self.extended = self._extended_columns() if style.extended else (None,) * 6
        self.first_close_us: int | None = None
        self.fields_read = abi.event_fields(ROW_FIELDS + (EXTENDED_FIELDS if style.extended else ()))
        self.read_fields(abi.EVENT_NAMES)

    def read_fields(self, fields: tuple[str, ...]) -> None:
        """Take events of these fields from now on (tuples of abi.event_struct(fields))."""
        self._rows = row_function(self.style.extended, fields)
        self._close_ns = abi.event_getter("close_ns", fields=fields)

    def _extended_columns(self) -> tuple[Formatted, ...]:
        """-x: caches of the extra columns' text, each by the event field it shows."""
        (rtt, min_rtt, retransmits, closer, reset, state), missing = EXTENDED_COLUMNS[self.kind]

        def column(format: str, text: Callable[[int], str], zero_missing: bool = True) -> Formatted:
            """format % text(value), or % the missing text for 0 (zero_missing: no RTT sample, nobody)."""
            return Formatted(lambda value: format % (missing if zero_missing and not value else text(value)))

        def ms_text(us: int) -> str:
            return "%.3f" % (us / 1000)
        return (column(rtt, ms_text), column(min_rtt, ms_text), column(retransmits, str, zero_missing=False),
                column(closer, closer_name), column(reset, reset_name),
                column(state, tcp_state_name, zero_missing=False))

    def write_header(self) -> None:
        s = self.style
        prefix = ""
        if s.wall_time:
            prefix += "TIME," if s.csv else "%-8s " % "TIME"
        if s.timestamp:
            prefix += "TIME(s)," if s.csv else "%-9s " % "TIME(s)"
        ip = "" if self.kind == "default" else "IP"
        name, comm, *rest, ms = HEADER
        if s.extended:
            columns, _ = EXTENDED_COLUMNS[self.kind]
            ms = EXTENDED_MS[self.kind][0] % ms + "".join(c % h for c, h in zip(columns, EXTENDED_HEADER))
        self.stream.write(prefix + HEADER_FORMATS[self.kind] % (name, comm, ip, *rest, ms) + "\n")
        self.stream.flush()

    def write(self, events: Sequence[tuple]) -> None:
        """Rows for abi.EVENT tuples, as the probe reads them."""
        if not events:
            return
        v4, v6 = (self.ip4, self.ipv4), (self.ip6, self.ipv6)  # per family: IP column, address cache
        lines = self._rows(events, self.processes, v4, v6, self.ports, self.kilobytes, self.milliseconds, self.extended)
        if self.style.wall_time or self.style.timestamp:
            clock = time.strftime("%H:%M:%S")  # one reading per batch
            close_ns = self._close_ns
            lines = [self._prefix(close_ns(event), clock) + line for event, line in zip(events, lines)]
        lines.append("")
        self.stream.write("\n".join(lines))
        self.stream.flush()

    def _prefix(self, close_ns: int, clock: str) -> str:
        """-T: TIME (clock: local HH:MM:SS, now); -t: TIME(s), seconds since the first row's close."""
        s = self.style
        prefix = ""
        if s.wall_time:
            prefix = clock + "," if s.csv else "%-8s " % clock
        if s.timestamp:
            close_us = close_ns // 1000
            if self.first_close_us is None:
                self.first_close_us = close_us
            delta = (close_us - self.first_close_us) / 1000000
            prefix += "%.6f," % delta if s.csv else "%-9.6f " % delta
        return prefix
