"""--format journald: entries in journald's native protocol, field for field RecordBuilder's records;
the sender never makes the reader wait, counts what journald does not take, and sends large entries by
memfd."""

from __future__ import annotations

import array
import ast
import errno
import fcntl
import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from otel_tcplife import abi, cli, codegen, contract
from otel_tcplife.contract import INT, Attribute, Field
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.errors import UsageError
from otel_tcplife.output import journal_native
from otel_tcplife.output.journal_native import FIELD_NAME, JournalSender, JournalSocket, attribute_fields, field
from otel_tcplife.output.journald import CHUNK_ENTRIES, JournaldEncoder, generated_encoder, resource_fields
from otel_tcplife.record import RecordBuilder, log_body
from otel_tcplife.session import Decoder, as_events
from otel_tcplife.stats import Stats

from ..support import FixedClock, sample_session
from .test_otlp_frames import sessions as generated_sessions
from .test_otlp_wire import varied_sessions

RESOURCE = {"service.name": "otel-tcplife", "host.name": "h", "test.lines": "one\ntwo"}


def parse_entry(data: bytes) -> list[tuple[str, bytes]]:
    """A native-protocol datagram's fields, in order, read as journald reads them."""
    fields, i = [], 0
    while i < len(data):
        end = data.index(b"\n", i)
        name, equals, value = data[i:end].partition(b"=")
        if equals:
            i = end + 1
        else:  # binary: the name's line, the value's length, the value, a newline
            (size,) = struct.unpack_from("<Q", data, end + 1)
            value = data[end + 9:end + 9 + size]
            assert data[end + 9 + size:end + 10 + size] == b"\n"
            i = end + 10 + size
        assert FIELD_NAME.fullmatch(name.decode()), name
        fields.append((name.decode(), value))
    return fields


def text(value: object) -> bytes:
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return (repr(value) if isinstance(value, float) else str(value)).encode()


def expected_fields(record, resource: dict) -> list[tuple[str, bytes]]:
    """The entry of a record, as the module's docstring says it is."""
    names = {a.key: a.journald_field for a in contract.SESSION_ATTRIBUTES}
    return [("MESSAGE", log_body(record).encode()), ("PRIORITY", b"6"), ("SYSLOG_IDENTIFIER", b"otel-tcplife"),
            ("OTEL_EVENT_NAME", b"tcplife.session"), ("TRACE_ID", record.trace_id.hex().encode()),
            ("SPAN_ID", record.span_id.hex().encode()),
            *([("PARENT_SPAN_ID", record.parent_span_id.hex().encode())] if record.parent_span_id else []),
            *[(names[key], text(value)) for key, value in record.attributes],
            *[(key.upper().replace(".", "_"), value.encode()) for key, value in resource.items()]]


def records_and_entries(sessions, resource: dict = RESOURCE):
    """RecordBuilder's records and the journald entries for the same events and ids."""
    events = as_events(sessions)
    names = ProcessNames(proc="/nonexistent")
    records = RecordBuilder(clock=FixedClock(), names=names).build(Decoder().decode(events),
                                                                   FixedClock.offset_ns, 0)
    encoder = JournaldEncoder(attribute_fields(resource)[0], names)
    entries = [entry for chunk in encoder.encode(events) for entry in chunk]
    return records, entries


def assert_entries_match_records(sessions, resource: dict = RESOURCE) -> None:
    records, entries = records_and_entries(sessions, resource)
    assert len(entries) == len(records)
    for record, entry in zip(records, entries):
        assert parse_entry(entry) == expected_fields(record, resource)


SESSIONS = [
    sample_session(),
    sample_session(role=abi.ROLE_SERVER, error=errno.ECONNRESET, comm="two\nlines ñ"),
    sample_session(role=abi.ROLE_UNKNOWN, family=6, laddr="::1", raddr="::2", comm='x"y\\z='),
    sample_session(role=77, error=errno.ECONNREFUSED, tx_bytes=0, rx_bytes=2**40, rport=65535),
]


def test_entries_are_the_records_field_for_field():
    assert_entries_match_records(SESSIONS)
    assert_entries_match_records(varied_sessions(300))  # more than a chunk


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(generated_sessions(), max_size=8))
def test_generated_sessions_field_for_field(generated):
    assert_entries_match_records(generated)


def test_the_entries_come_in_chunks():
    events = as_events(varied_sessions(CHUNK_ENTRIES + 1))
    chunks = list(JournaldEncoder().encode(events))
    assert [len(chunk) for chunk in chunks] == [CHUNK_ENTRIES, 1]


def test_the_generated_loop_reads_events_by_field_name_in_short_fstrings():
    source = generated_encoder(contract.attributes()).source
    assert f"for {abi.EVENT_TARGET} in events:" in source
    sizes = [len(node.values) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.JoinedStr)]
    assert sizes and max(sizes) <= codegen.FSTRING_PARTS


def test_a_value_with_a_newline_is_a_binary_field():
    assert field("A", "b=c") == "A=b=c\n"
    value = "ñ\n" * 100  # 300 bytes: a length whose bytes are not all ASCII
    data = field("A", value).encode(*journal_native.ENCODING)
    assert data == b"A\n" + struct.pack("<Q", 300) + value.encode() + b"\n"
    assert parse_entry(data) == [("A", value.encode())]


def test_resource_attributes_are_fields_named_as_the_records_are():
    fields, left_out = attribute_fields({"service.name": "s", "k8s.pod-name": "p", "_private": "x", "9lives": "x",
                                         "n": 3, "on": True, "list": ["a", 1]})
    assert parse_entry(fields.encode()) == [("SERVICE_NAME", b"s"), ("K8S_POD_NAME", b"p"), ("N", b"3"),
                                            ("ON", b"true"), ("LIST", b'["a",1]')]
    assert left_out == ["_private", "9lives"]


def test_resource_attributes_named_as_the_entrys_own_fields_are_left_out():
    fields, left_out = resource_fields({"service.name": "s", "message": "m", "process.pid": 1, "trace.id": "t"})
    assert (fields, left_out) == ("SERVICE_NAME=s\n", ["message", "process.pid", "trace.id"])


def test_an_attribute_journald_would_ignore_is_refused():
    table = contract.attributes() + (Attribute("test.bad-name", INT, Field("oldstate")),)
    with pytest.raises(ValueError, match="TEST_BAD-NAME"):
        generated_encoder(table)


def test_the_stats_line_has_journald_dropped_only_with_journald():
    stats = Stats()
    assert "journald_dropped" not in stats.snapshot()
    stats.journald_dropped = lambda: 7
    assert stats.snapshot()["journald_dropped"] == 7


# --- the socket -------------------------------------------------------------------------------------

@pytest.fixture
def journal(tmp_path):
    """A datagram socket standing for journald's, that the test reads (or not)."""
    path = str(tmp_path / "socket")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    receiver.bind(path)
    yield path, receiver
    receiver.close()


def received(receiver: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(receiver.recv(1 << 20, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return out


def test_no_journal_socket_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=f"cannot send to the journal at {tmp_path}/none: No such file"):
        JournalSocket(str(tmp_path / "none"))


def test_no_journal_socket_is_one_line_and_exit_status_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(journal_native.SOCKET_PATH_ENV, str(tmp_path / "none"))
    assert cli.main(["--format", "journald"]) == 2
    err = capsys.readouterr().err
    assert err == (f"otel-tcplife: error: --format journald: cannot send to the journal at {tmp_path}/none: "
                   "No such file or directory; is systemd-journald running?\n")


def test_what_journald_does_not_take_in_time_is_dropped_and_counted(journal, monkeypatch):
    path, receiver = journal  # nobody reads it: its queue fills
    monkeypatch.setattr(journal_native, "SEND_TIMEOUT", 0.001)
    warnings = []
    sender = JournalSocket(path, warn=warnings.append)
    entries = [b"MESSAGE=%d\n" % i + b"X=" + b"x" * 1000 + b"\n" for i in range(300)]
    sender.send(entries)
    got = received(receiver)
    assert sender.dropped > 0 and len(got) + sender.dropped == 300
    assert got == entries[:len(got)]  # the first ones, whole
    sender.close()
    assert warnings == [f"{sender.dropped} sessions not sent to journald: journald took none for 0.001 s "
                        "(it is behind)"]


def test_a_burst_larger_than_the_socket_holds_waits_for_journald(journal):
    """journald's socket takes fewer than a hundred entries it has not read: the rest wait in the queue."""
    path, receiver = journal
    sender = JournalSender(JournalSocket(path))
    entries = [b"MESSAGE=%d\n" % i + b"X=" + b"x" * 1000 + b"\n" for i in range(2000)]
    for i in range(0, 2000, CHUNK_ENTRIES):
        sender.offer(entries[i:i + CHUNK_ENTRIES])  # returns at once: nobody reads yet
    got = []
    while len(got) < 2000:
        time.sleep(0.001)  # a journald slower than the sender
        got += received(receiver)
    sender.close(timeout=5)
    assert got == entries and sender.dropped == 0


def test_a_chunk_that_finds_the_queue_full_is_dropped_and_counted(journal):
    path, receiver = journal
    warnings = []
    sender = JournalSender(JournalSocket(path, warn=warnings.append), capacity=4)
    with sender._changed:  # the sender's thread takes nothing meanwhile
        for chunk in ([b"A=1\n", b"A=2\n"], [b"A=3\n", b"A=4\n"], [b"A=5\n"]):
            sender.offer(chunk)
    assert sender.dropped == 1
    sender.close(timeout=5)
    assert received(receiver) == [b"A=%d\n" % i for i in range(1, 5)]
    assert warnings == ["1 sessions not sent to journald: the queue of 4 entries is full (journald is behind)"]


def test_what_is_left_at_the_shutdown_deadline_is_dropped_and_counted(journal, monkeypatch):
    path, receiver = journal  # nobody reads it
    monkeypatch.setattr(journal_native, "SEND_TIMEOUT", 0.2)
    warnings = []
    sender = JournalSender(JournalSocket(path, warn=warnings.append))
    for i in range(0, 500, 100):
        sender.offer([b"X=" + b"x" * 1000 + b"\n"] * 100)
    started = time.monotonic()
    sender.close(timeout=0.3)
    assert time.monotonic() - started < 0.3 + 0.2 + 1  # the deadline, one send's wait, slack
    assert sender.dropped > 0 and len(received(receiver)) + sender.dropped == 500
    assert any("journald did not take them by the shutdown deadline" in line for line in warnings)


def test_a_journald_that_went_away_and_came_back_gets_entries_again(journal, monkeypatch):
    path, receiver = journal
    monkeypatch.setattr(journal_native, "RECONNECT_INTERVAL", 0)
    sender = JournalSocket(path, warn=lambda line: None)
    receiver.close()
    sender.send([b"A=1\n", b"A=2\n"])
    assert sender.dropped == 2
    os.unlink(path)
    back = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    back.bind(path)
    sender.send([b"A=3\n"])
    assert received(back) == [b"A=3\n"] and sender.dropped == 2
    back.close()
    sender.close()


def test_an_entry_too_large_for_a_datagram_goes_by_sealed_memfd(journal):
    path, receiver = journal
    sender = JournalSocket(path)
    sender.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    entry = b"MESSAGE=big\nX=" + b"x" * 100_000 + b"\n"
    sender.send([entry])
    data, ancillary, _, _ = receiver.recvmsg(1024, socket.CMSG_SPACE(4 * 4))
    assert data == b"" and sender.dropped == 0
    ((level, kind, fds),) = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    (fd,) = array.array("i", fds)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                                                      | fcntl.F_SEAL_SEAL)
        assert os.pread(fd, len(entry) + 1, 0) == entry
    finally:
        os.close(fd)
    sender.close()
