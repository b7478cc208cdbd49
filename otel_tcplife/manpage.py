"""otel-tcplife(8), written from the parser that --help prints, so the two cannot drift.

    python -m otel_tcplife.manpage > otel-tcplife.8      # `make install` does this

The synopsis, every option (with its default and choices) and the examples come from
cli.build_parser(); the capabilities from probe.preflight.CAPABILITIES, the table's columns
from output.table.HEADER, the exit statuses from errors. What is written here is prose, in
the spirit of bcc's tcplife(8): what each capability and column means, the environment.
"""

from __future__ import annotations

import argparse
import re
import sys

from . import __version__
from .cli import EXAMPLES, PROG, build_parser
from .errors import TcplifeError, UsageError
from .output.table import HEADER
from .probe.preflight import CAPABILITIES, KERNEL_BTF, TRACEFS_MOUNTS

CAPABILITY_USES = {
    "CAP_BPF": "load the probe and create its maps",
    "CAP_PERFMON": "attach the probe to tracepoints and read kernel memory in it",
    "CAP_DAC_READ_SEARCH": "read tracepoint ids in tracefs, which is mode 0700",
    "CAP_SYS_PTRACE": "read /proc/PID/exe of other users' processes for process.executable.name; "
                      "without it the agent warns at start and those records carry the comm",
}

FIELDS = {
    "TIME": "Time the row was printed, HH:MM:SS (-T).",
    "TIME(s)": "Seconds since the first row, from kernel timestamps (-t).",
    "PID": "Process ID that owns the session (the connecting or accepting process).",
    "COMM": "Process name.",
    "IP": "Address family, 4 or 6 (-w and -s).",
    "LADDR": "Local IP address.",
    "LPORT": "Local port.",
    "RADDR": "Remote IP address.",
    "RPORT": "Remote port.",
    "TX_KB": "Payload sent, in KiB (exact payload, not sequence numbers).",
    "RX_KB": "Payload received, in KiB.",
    "MS": "Lifespan of the session, in milliseconds.",
}

ENVIRONMENT = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/gRPC endpoint, as --otlp-endpoint (http:// plain text, https:// TLS).",
    "OTEL_EXPORTER_OTLP_INSECURE": "true: plain text for an endpoint without a scheme.",
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "CA certificates to trust, as --otlp-certificate.",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY": "Client key for mTLS, as --otlp-client-key.",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "Client certificate for mTLS, as --otlp-client-certificate.",
    "OTEL_EXPORTER_OTLP_HEADERS": "Headers, key=value comma separated, values URL-encoded; never printed.",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip or none, as --otlp-compression.",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "Per request, in milliseconds.",
    "OTEL_RESOURCE_ATTRIBUTES": "Resource attributes, key=value comma separated (e.g. k8s.node.name=node-1), "
                                "added to every record's Resource.",
    "OTEL_SERVICE_NAME": "service.name of the agent's Resource, with --resource agent (default otel-tcplife).",
    "SSL_CERT_FILE": "The system CA bundle to trust for https:// endpoints, when not the default.",
}


def escape(text: str) -> str:
    """Text as roff: backslashes and hyphens escaped, other than ASCII as \\[uXXXX], no line
    taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if c.isascii() else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def synopsis(parser: argparse.ArgumentParser) -> str:
    usage = " ".join(parser.format_usage().split())
    return usage.removeprefix("usage: ").removeprefix(PROG).strip()


def options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    lines = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if not actions:
            continue
        title = "General" if group is parser._optionals else sentence(group.title).rstrip(".")
        lines += [f".SS {escape(title)}"]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            lines += [".TP", f".B {escape(invocation)}", escape(sentence(formatter._expand_help(action)))]
    return lines


def examples() -> list[str]:
    lines = []
    for line in EXAMPLES.splitlines()[1:]:
        command, _, comment = line.strip().partition("#")
        if command:
            lines += [".TP", f".B {escape(command.strip())}", escape(sentence(comment.strip()))]
    return lines


def check_sources() -> None:
    """The prose here covers exactly what the code defines, or the page is not written."""
    if set(CAPABILITY_USES) != set(CAPABILITIES):
        raise RuntimeError(f"manpage.CAPABILITY_USES {sorted(CAPABILITY_USES)} != preflight.CAPABILITIES")
    if not set(HEADER) <= set(FIELDS):
        raise RuntimeError(f"manpage.FIELDS lacks table columns {sorted(set(HEADER) - set(FIELDS))}")


def render() -> str:
    check_sources()
    parser = build_parser()
    grant = ", ".join(CAPABILITIES)
    lines = [
        f'.TH OTEL\\-TCPLIFE 8 "" "{escape(PROG)} {__version__}" "System Administration"',
        ".nh", ".ad l",
        ".SH NAME",
        f"{escape(PROG)} \\- {escape(parser.description[:1].lower() + parser.description[1:].rstrip('.'))}: "
        "TCP session telemetry from eBPF, as OpenTelemetry logs and spans",
        ".SH SYNOPSIS",
        f".B {escape(PROG)}",
        escape(synopsis(parser)),
        ".SH DESCRIPTION",
        escape(f"{PROG} traces TCP sessions with eBPF and reports one record per closed session: "
               "its addresses, ports, owning process, payload bytes each way and lifespan. Without "
               "--format it is the classic tcplife table, same flags and columns. With --format ndjson "
               "it prints one JSON object per session, and with --otlp-endpoint it exports every "
               "session as an OpenTelemetry log record and span over OTLP/gRPC, with a bounded "
               "queue, retries and an optional disk spool."),
        ".PP",
        escape("It attaches to the sock:inet_sock_set_state tracepoint (tp_btf when it loads, else "
               "the classic tracepoint), so only TCP state changes are traced, not sends and "
               "receives. The probe is a CO-RE object shipped in the package: nothing is compiled "
               "at run time."),
        ".PP",
        escape("SIGINT, SIGTERM and SIGHUP end it after a flush, with a JSON stats line on stderr. "
               "Sessions the kernel could not report (ring buffer full) are counted and reported "
               "on stderr."),
        ".SH REQUIREMENTS",
        escape(f"Linux with BTF ({KERNEL_BTF}) and the sock:inet_sock_set_state tracepoint (4.16+), "
               f"libbpf 1.x, Python 3.11 or later. Root, or these capabilities: {grant}."),
    ]
    for name in CAPABILITIES:
        lines += [".TP", f".B {name}", escape(sentence(CAPABILITY_USES[name]))]
    lines += [
        ".PP",
        escape(f"CAP_SYS_ADMIN only where tracefs is not mounted at {TRACEFS_MOUNTS[0]}: the agent "
               "mounts it. A missing capability is named in the error."),
        ".SH OPTIONS",
        *options(parser),
        ".SH EXAMPLES",
        *examples(),
        ".TP",
        f".B {escape(PROG + ' --format ndjson --otlp-endpoint http://127.0.0.1:4317')}",
        "One JSON object per session on stdout, and OTLP export to a local collector.",
        ".SH FIELDS",
        escape("The table's columns (NDJSON and OTLP carry the same data as OpenTelemetry attributes):"),
    ]
    for name, meaning in FIELDS.items():
        lines += [".TP", escape(name), escape(meaning)]
    lines += [".SH ENVIRONMENT"]
    for name, meaning in ENVIRONMENT.items():
        lines += [".TP", f".B {escape(name)}", escape(meaning)]
    lines += [
        ".PP",
        escape("Each OTEL_EXPORTER_OTLP_ variable also has a per-signal form "
               "(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_HEADERS, ...), which wins; "
               "a flag wins over both."),
        ".SH EXIT STATUS",
        ".TP", "0", "Ended by a signal, after the flush; or the reader of stdout went away.",
        ".TP", str(TcplifeError.exit_status), escape("Setup failed: no privilege, no BTF, no libbpf. One line on stderr."),
        ".TP", str(UsageError.exit_status), escape("Bad flag or environment value. One line on stderr."),
        ".SH FILES",
        ".TP", escape(KERNEL_BTF), "Kernel BTF, for the CO\\-RE probe.",
        ".TP", escape(TRACEFS_MOUNTS[0]), "tracefs, for tracepoint ids.",
        ".TP", "/proc/\\fIPID\\fP/exe", "The executable of a session's process (process.executable.name).",
        ".SH OVERHEAD",
        escape("The cost is per session, not per packet: about ten short BPF program runs in the "
               "kernel per connection, and a few microseconds of user-space CPU per session. Measure "
               "it for your connection rate before production use."),
        ".SH SEE ALSO",
        "tcplife(8), systemd.exec(5), capabilities(7), journalctl(1)",
    ]
    text = "\n".join(lines) + "\n"
    return re.sub(r"\n{2,}", "\n", text)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
