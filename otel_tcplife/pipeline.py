"""The pipeline, composed in one place: raw events -> outputs.

    probe batch ─┬▶ TableWriter ─▶ the classic table on stdout
                 ├▶ NdjsonEncoder ─▶ NDJSON on stdout
                 ├▶ OtlpJsonEncoder ─▶ OTLP-JSON on stdout
                 ├▶ JournaldEncoder ─▶ JournalSender ─▶ journald (native protocol)
                 └▶ SessionFrames ─▶ QueuedExporter per signal ─▶ OTLP/gRPC

Every output reads the probe's event tuples itself, from caches of the text of their
fields: decoding each event into a Session first cost ~0.35 µs per session more.

The reading thread encodes each session's OTLP log record and span (the
exporters' queues hold those bytes); batching into requests, sending and
retrying run in the exporters' worker threads.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from itertools import chain
from typing import BinaryIO, TextIO

import orjson

from . import abi, contract, log
from .caches import Formatted
from .clock import WallClock
from .codegen import OWNER_FIELDS
from .config import Config
from .enrich import ProcessNames
from .errors import UsageError
from .output.table import TableWriter
from .stats import Stats
from .stdout_guard import StdoutGuard


# Backoff between retries stays short: a collector that is back is found within
# seconds (a success also ends the other requests' waits at once).
RETRY_MAX_INTERVAL = 5.0


class Pipeline:
    def __init__(self, config: Config, stdout: TextIO) -> None:
        self.config = config
        self.stats = Stats()
        self.table = TableWriter(stdout, config.table) if config.format == "table" else None
        self.stdout: BinaryIO = stdout.buffer
        self.ndjson = None  # an NdjsonEncoder
        self.otlp_json = None  # an OtlpJsonEncoder
        self.journald = None  # a JournaldEncoder
        self.journal = None  # its JournalSender
        self.frames = None  # a SessionFrames, for OTLP/gRPC
        self.exporters: dict = {}  # signal -> QueuedExporter
        self.senders: list = []  # OtlpGrpcSenders, closed at shutdown
        self._locks: list[int] = []  # spool directory locks, held until exit
        self.stdout_guard = StdoutGuard(exporting=bool(config.otlp), warn=log.warn)
        self.stats.stdout_dropped = lambda: self.stdout_guard.dropped
        self._probe = None  # a pinned probe: see bind_probe
        self._shut = False
        self.identity = None  # identity.ProcessResources, with --resource process
        if config.format == "table" and not config.otlp:
            return
        # One clock and one set of ids per session, whichever outputs share them.
        self.clock = WallClock()
        names = ProcessNames()
        # The record's attributes: with -x, the wire facts too (contract.py).
        attributes = contract.attributes(extended=config.table.extended)
        from .resource import agent_attributes

        agent = agent_attributes()
        # Whose Resource a record carries: its process's (grouped per batch), or the agent's.
        if config.resource == "process":
            from .identity import ProcessResources

            self.identity = ProcessResources(agent, names)
        # The owner as the kernel saw it: identity.ProcessResources resolves it once per process.
        self._owner = abi.event_getter(*OWNER_FIELDS)
        if config.format == "ndjson":
            from .output.ndjson import NdjsonEncoder, resource_tail

            tails = None
            if self.identity:  # each line ends with its process's Resource, looked up by its owner
                tails = Formatted(lambda owner: resource_tail(self.identity.owner_resource(owner)))
            self.ndjson = NdjsonEncoder(names, attributes, tails)
        if config.format == "ndjson" and not config.otlp:
            return
        # The OpenTelemetry, protobuf and gRPC modules are imported only by the
        # outputs that use them: the table and NDJSON start faster and smaller.
        if config.format == "journald":
            from .output.journal_native import JournalSender, JournalSocket
            from .output.journald import JournaldEncoder, resource_fields

            # No journal: one line and exit 2, before the probe loads.
            self.journal = JournalSender(JournalSocket())
            fields, left_out = resource_fields(agent)
            for key in left_out:
                log.warn(f"resource attribute {key!r} has no journald field name of its own: not in journal entries")
            self.journald = JournaldEncoder(fields, names, attributes)
            self._journald_fields = Formatted(lambda resource: resource_fields(dict(resource))[0])
            self.stats.journald_dropped = lambda: self.journal.dropped
        if config.format in ("otlp-json", "otlp-json-traces"):
            from .output.otlp_json import OtlpJsonEncoder
            from .resource import resource_json, scope_json

            signal = "logs" if config.format == "otlp-json" else "traces"
            resources = None
            if self.identity:  # each record's Resource, by its owner
                resources = Formatted(
                    lambda owner: orjson.dumps(resource_json(self.identity.owner_resource(owner))).decode())
            self.otlp_json = OtlpJsonEncoder(resource_json(agent), scope_json(), signal, names, attributes, resources)
        if config.otlp:
            from .delivery import QueuedExporter, RetryPolicy
            from .output.otlp import OtlpGrpcSender
            from .output.otlp_frames import SessionFrames
            from .output.otlp_wire import WireEncoder, resource_field
            from .resource import resource_proto, scope_proto

            self.frames = SessionFrames(names, attributes, by_owner=self.identity is not None)
            protos = WireEncoder(resource_proto(agent), scope_proto())
            # An owner's Resource as WireEncoder.grouped_requests writes it
            self._resource_fields = Formatted(
                lambda owner: resource_field(resource_proto(self.identity.owner_resource(owner))))
            d = config.delivery
            for signal, settings in config.otlp.items():
                spool = self._open_spool(signal, len(config.otlp)) if config.spool else None
                sender = OtlpGrpcSender(settings, signal)
                self.senders.append(sender)
                self.exporters[signal] = QueuedExporter(
                    signal, protos.grouped_requests if self.identity else protos.requests, sender,
                    runs=self.identity is not None,  # each record's Resource, as runs (handle)
                    queue_capacity=d.queue_size, max_batch=d.batch_size, flush_interval=d.flush_interval,
                    max_in_flight=d.max_in_flight, timeout=settings.timeout,
                    retry=RetryPolicy(max_interval=RETRY_MAX_INTERVAL, max_elapsed=d.retry_max_elapsed),
                    log=log.named(signal),
                    spool=spool,
                )
                self.stats.exporters[signal] = self.exporters[signal].stats

    def _open_spool(self, signal: str, signals: int):
        from .delivery import Spool, check_directory

        settings = self.config.spool
        directory = os.path.join(settings.directory, signal)
        check_directory(settings.directory)
        check_directory(directory)
        # One agent per spool: a second writer would corrupt it. The kernel
        # drops the lock when we exit, however we exit.
        lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise UsageError(f"spool directory {directory} is in use by another otel-tcplife") from None
        self._locks.append(lock)
        return Spool(directory, max_bytes=settings.max_bytes // signals, fsync=settings.fsync,
                     full_policy=settings.full_policy, log=log.named(f"{signal} spool"))

    # -- durability: when the probe may release what it read (a pinned ring buffer) ------------

    def bind_probe(self, probe) -> None:
        """Commits the probe's reads once durable in every output that keeps them: stdout (its
        formats write and flush each batch before the next read) and each signal's spool (up to its
        exporter's durable frontier: QueuedExporter.durable_prefix, moved by its spooler thread, which
        tells on_durable). The other outputs (journald, OTLP without a spool) keep nothing across a
        restart: their batches commit at once. Each output first says which records it is about to
        make durable (probe.hand): those are duplicates if read again."""
        if not getattr(probe, "pinned", False):
            return
        self._probe = probe
        self._stdout_durable = self.config.format in ("table", "ndjson", "otlp-json", "otlp-json-traces")
        self._stdout_seq = probe.read_seq
        base = probe.read_seq  # each exporter is offered every record read from here, in order
        self._spool_frontiers = []
        for exporter in self.exporters.values():
            if getattr(exporter, "_spool", None) is None:
                continue

            # Records before base + the frontier are in the spool, or counted as dropped (the
            # exporter knows the order in which they leave its memory queue).
            def frontier(exporter=exporter) -> int:
                return base + exporter.durable_prefix()

            def on_durable(prefix: int, done: bool) -> None:
                if not done:
                    probe.hand(base + prefix)
                else:
                    self._commit()

            exporter.on_durable = on_durable
            self._spool_frontiers.append(frontier)

    def _before_stdout(self) -> None:
        if self._probe is not None and self._stdout_durable:
            self._probe.hand(self._probe.read_seq)

    def handled(self) -> None:
        """The batch just read went through handle(): what is durable now is committed."""
        if self._probe is None:
            return
        self._stdout_seq = self._probe.read_seq
        self._commit()

    def _commit(self) -> None:
        probe = self._probe
        seq = self._stdout_seq if self._stdout_durable or not self._spool_frontiers else probe.read_seq
        for frontier in self._spool_frontiers:
            seq = min(seq, frontier())
        probe.commit(seq)

    def start(self) -> None:
        if self.table:
            self.stdout_guard.write(self.table.write_header, 0)
        for exporter in self.exporters.values():
            exporter.start()

    def read_fields(self) -> tuple[str, ...]:
        """The event fields the outputs read (and the owner, with --resource process), in struct order:
        the probe then unpacks only these (abi.event_struct), and the outputs take such events."""
        outputs = [o for o in (self.table, self.ndjson, self.otlp_json, self.journald, self.frames) if o]
        fields = abi.event_fields({name for o in outputs for name in o.fields_read}
                                  | (set(OWNER_FIELDS) if self.identity else set()))
        for output in outputs:
            output.read_fields(fields)
        if self.identity:
            self._owner = abi.event_getter(*OWNER_FIELDS, fields=fields)
        return fields

    def handle(self, events: list[tuple]) -> None:
        self.stats.sessions_observed += len(events)
        guard = self.stdout_guard
        if self.table:
            self._before_stdout()
            guard.write(lambda: self.table.write(events), len(events))
        if self.ndjson is None and self.otlp_json is None and self.journald is None and self.frames is None:
            return
        # One clock offset and observed time per batch, whichever outputs share them (the span ids
        # come with each event).
        offset = self.clock.offset()
        observed = time.time_ns()
        if self.ndjson:  # each line with its process's Resource, if any (its own lookup: no grouping)
            guard.write(lambda: self._write(self.ndjson.encode(events, offset)), len(events))
        if self.otlp_json:  # records of each process together, under its Resource (encode groups them)
            guard.write(lambda: self._write(self.otlp_json.encode(events, offset, observed)), len(events))
        if self.journald:
            if self.identity is None:
                groups = [(self.journald.resource, events)]
            else:  # the entries of each process together, with its Resource's fields
                fields = self._journald_fields
                groups = [(fields[r], group) for r, group in self.identity.group(events, map(self._owner, events))]
            for entries in self.journald.encode_groups(groups):
                self.journal.offer(entries)
        if self.frames:
            logs, traces = self.exporters.get("logs"), self.exporters.get("traces")
            if self.identity is None:
                runs = None
                log_records, spans = self.frames.encode(events, offset, observed,
                                                        logs=logs is not None, spans=traces is not None)
            else:
                # Each process's records are a run of its Resource in the exporters' queues, which
                # WireEncoder.grouped_requests groups by: per run, not per record.
                owned = self.frames.encode_owned(events, offset, observed, logs=logs is not None,
                                                 spans=traces is not None)
                resource_fields = self._resource_fields
                runs = [(resource_fields[owner], len(frames[0] or frames[1])) for owner, frames in owned.items()]
                log_records = list(chain.from_iterable(frames[0] for frames in owned.values()))
                spans = list(chain.from_iterable(frames[1] for frames in owned.values()))
            if logs:
                logs.offer(log_records, runs)
            if traces:
                traces.offer(spans, runs)

    def _write(self, chunks) -> None:
        self._before_stdout()
        self.stdout.writelines(chunks)
        self.stdout.flush()

    def shutdown(self) -> None:
        """Flush the exporters and journald's queue within the deadline (in parallel), then close the channels."""
        if self._shut:
            return
        self._shut = True
        timeout = self.config.delivery.shutdown_timeout
        threads = [threading.Thread(target=e.shutdown, args=(timeout,)) for e in self.exporters.values()]
        if self.journal:
            threads.append(threading.Thread(target=self.journal.close, args=(timeout,)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for sender in self.senders:
            sender.close()
