"""What a collector sends back is quoted in the agent's log, never obeyed: it cannot forge lines."""

from __future__ import annotations

from .test_otlp_export import start_exporting


def test_a_server_message_with_line_breaks_stays_on_one_escaped_line(traffic, start_agent, receiver):
    receiver.partial_success(rejected=1, message="over quota\notel-tcplife: forged line\r\x1b[2K", signal="logs")
    server, port = traffic.server(name="tl-server", count=2)
    agent = start_exporting(start_agent, receiver.endpoint, port, "--batch-size", "2")
    traffic.client(name="tl-client", port=port, count=2).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 2)
    _, _, stderr = agent.stop()
    assert not any(line.startswith("otel-tcplife: forged") for line in stderr.splitlines())
    assert "over quota\\x0aotel-tcplife: forged line\\x0d\\x1b[2K" in stderr
    assert "\x1b" not in stderr and "\r" not in stderr
