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
from typing import BinaryIO, TextIO

import orjson

from . import abi, contract, log
from .caches import Formatted
from .clock import WallClock
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
        self.identity = None
        if config.resource == "process":
            from .identity import ProcessResources

            self.identity = ProcessResources(agent, names)
        # The owner as the kernel saw it: identity.ProcessResources resolves it once per process.
        self._owner = abi.event_getter("pid", "comm", "start_ns", "cgroup_id")
        if config.format == "ndjson":
            from .output.ndjson import NdjsonEncoder, resource_tail

            self.ndjson = NdjsonEncoder(names, attributes)
            self._ndjson_tails = Formatted(resource_tail)
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
            self.otlp_json = OtlpJsonEncoder(resource_json(agent), scope_json(), signal, names, attributes)
            self._otlp_json_resources = Formatted(lambda resource: orjson.dumps(resource_json(resource)).decode())
        if config.otlp:
            from .delivery import QueuedExporter, RetryPolicy
            from .output.otlp import OtlpGrpcSender
            from .output.otlp_frames import SessionFrames
            from .output.otlp_wire import WireEncoder, resource_field
            from .resource import resource_proto, scope_proto

            self.frames = SessionFrames(names, attributes)
            protos = WireEncoder(resource_proto(agent), scope_proto())
            self._resource_fields = Formatted(lambda resource: resource_field(resource_proto(resource)))
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

    def start(self) -> None:
        if self.table:
            self.stdout_guard.write(self.table.write_header, 0)
        for exporter in self.exporters.values():
            exporter.start()

    def handle(self, events: list[tuple]) -> None:
        self.stats.sessions_observed += len(events)
        guard = self.stdout_guard
        if self.table:
            guard.write(lambda: self.table.write(events), len(events))
        if self.ndjson is None and self.otlp_json is None and self.journald is None and self.frames is None:
            return
        # One clock offset and observed time per batch, whichever outputs share them (the span ids
        # come with each event).
        offset = self.clock.offset()
        observed = time.time_ns()
        if self.identity is None:
            groups = [(None, events)]
        else:  # the records of each process together, as OTLP groups them under their Resource
            groups = self.identity.group(events, list(map(self._owner, events)))
        if self.ndjson:
            tails = self._ndjson_tails
            for resource, group in groups:
                tail = tails[resource] if resource else ""
                guard.write(lambda: self._write(self.ndjson.encode(group, offset, tail)), len(group))
        if self.otlp_json:
            resources = self._otlp_json_resources
            parts = [(resources[r] if r else self.otlp_json.resource, group) for r, group in groups]
            guard.write(lambda: self._write(self.otlp_json.encode_groups(parts, offset, observed)), len(events))
        if self.journald:
            fields = self._journald_fields
            for resource, group in groups:
                for entries in self.journald.encode(group, fields[resource] if resource else None):
                    self.journal.offer(entries)
        if self.frames:
            logs, traces = self.exporters.get("logs"), self.exporters.get("traces")
            # Each group's records are a run of its Resource in the exporters' queues, which
            # WireEncoder.grouped_requests groups by: per group, not per record.
            resource_fields = self._resource_fields
            log_records, spans, runs = [], [], []
            for resource, group in groups:
                group_logs, group_spans = self.frames.encode(group, offset, observed,
                                                             logs=logs is not None, spans=traces is not None)
                log_records += group_logs
                spans += group_spans
                runs.append((resource_fields[resource] if resource else None, len(group)))
            if self.identity is None:
                runs = None
            if logs:
                logs.offer(log_records, runs)
            if traces:
                traces.offer(spans, runs)

    def _write(self, chunks) -> None:
        self.stdout.writelines(chunks)
        self.stdout.flush()

    def shutdown(self) -> None:
        """Flush the exporters and journald's queue within the deadline (in parallel), then close the channels."""
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
