"""Wire compatibility: the agent's export relayed by an independent collector (rotel)."""

from __future__ import annotations

import json

from ..rotel_relay import RotelRelay
from .test_stdout_formats import ATTRIBUTE_KEYS, collect, flat


def test_records_relayed_through_rotel_arrive_intact(traffic, start_agent, receiver):
    with RotelRelay(receiver.port) as relay:
        server, port = traffic.server(name="tl-server", count=5, recv=300, send=70000)
        agent = start_agent("--format", "ndjson", "-L", str(port), "--resource", "process",
                            "--otlp-endpoint", relay.endpoint,
                            "--flush-interval", "0.2")
        traffic.client(name="tl-client", port=port, count=5, send=300, recv=70000).events()
        server.events()
        rows = {row["trace_id"]: row for row in map(json.loads, collect(agent, 5))}
        assert len(rows) == 5
        assert receiver.wait_for(lambda r: len(r.log_records()) == 5 and len(r.spans()) == 5, timeout=15)
        agent.stop()

    for record in receiver.log_records() + receiver.spans():
        row = rows[record.trace_id.hex()]
        assert record.span_id.hex() == row["span_id"]
        assert flat(record.attributes) == {k: v for k, v in row.items() if k in ATTRIBUTE_KEYS}
    # The Resource too: NDJSON's flat resource keys are the exported Resource's.
    for resource, _, record in receiver.log_records_with_resource():
        row = rows[record.trace_id.hex()]
        attributes = flat(resource.attributes)
        shared = [key for key in attributes if key in row]
        assert {"service.name", "host.name", "os.type", "process.pid"} <= set(shared)
        assert {key: attributes[key] for key in shared} == {key: row[key] for key in shared}
    assert {log.event_name for log in receiver.log_records()} == {"tcplife.session"}
    assert {(s.name, s.kind) for s in receiver.spans()} == {("tcp accept", 2)}
