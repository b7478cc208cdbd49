"""The classic tcplife table, byte for byte (default, -w wide, -s CSV, -T, -t).

Rows are made straight from the probe's event tuples, column by column from caches of
formatted text: a row is nine lookups. One %-format per row of decoded Sessions took twice the
time. The loop over the events names their fields as abi.py does (it is compiled from ROW_LOOP
when the module loads, its target abi.EVENT_TARGET).
"""

from __future__ import annotations

import time
from typing import Sequence, TextIO

from .. import abi
from ..abi import comm_text
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


# The hot path: one loop of cache lookups, no call per row. EVENT_FIELDS becomes abi.EVENT_TARGET.
ROW_LOOP = """\
def rows(events, processes, v4, v6, ports, kilobytes, milliseconds):
    lines = []
    append = lines.append
    for EVENT_FIELDS in events:
        ip, addresses = v4 if family == 4 else v6
        append(f"{processes[pid, comm]}{ip}{addresses[saddr]}{ports[sport]}{addresses[daddr]}{ports[dport]}"
               f"{kilobytes[tx_bytes // 1024]}{kilobytes[rx_bytes // 1024]}"
               f"{milliseconds[(close_ns - birth_ns) // 1000]}")
    return lines
""".replace("EVENT_FIELDS", abi.EVENT_TARGET)
rows = compile_function(ROW_LOOP, "rows", {}, generated_filename(__name__, "rows"))
close_ns = abi.event_getter("close_ns")


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
        self.milliseconds = Formatted(lambda us: ms % (us / 1000))  # the classic float(us) / 1000
        self.first_close_us: int | None = None

    def write_header(self) -> None:
        s = self.style
        prefix = ""
        if s.wall_time:
            prefix += "TIME," if s.csv else "%-8s " % "TIME"
        if s.timestamp:
            prefix += "TIME(s)," if s.csv else "%-9s " % "TIME(s)"
        ip = "" if self.kind == "default" else "IP"
        name, comm, *rest = HEADER
        self.stream.write(prefix + HEADER_FORMATS[self.kind] % (name, comm, ip, *rest) + "\n")
        self.stream.flush()

    def write(self, events: Sequence[tuple]) -> None:
        """Rows for abi.EVENT tuples, as the probe reads them."""
        if not events:
            return
        v4, v6 = (self.ip4, self.ipv4), (self.ip6, self.ipv6)  # per family: IP column, address cache
        lines = rows(events, self.processes, v4, v6, self.ports, self.kilobytes, self.milliseconds)
        if self.style.wall_time or self.style.timestamp:
            clock = time.strftime("%H:%M:%S")  # one reading per batch
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
