"""Each record carries the Resource of the process that owns its session (issue: whose session it is):
its own OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, its pid and executable, and the agent's host
attributes, in NDJSON (flat keys), OTLP/JSON and OTLP (one ResourceLogs per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from otel_tcplife.identity import cgroup2_mount

from .test_stdout_formats import flat

# A client that lives on after its connection until its stdin closes, so that the agent finds it alive.
CLIENT = ("import socket, sys\n"
          "s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.sendall(b'x' * 100); s.close()\n"
          "sys.stdin.read()\n")
SERVER_ENV = {"OTEL_SERVICE_NAME": "inventory",
              "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=shop,service.version=2.0,host.name=not-this-host"}
CLIENT_ENV = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=checkout,deployment.environment.name=prod"}
AGENT_ENV = {"OTEL_RESOURCE_ATTRIBUTES": "k8s.node.name=node-7", "OTEL_SERVICE_NAME": "the-agent"}


def expected(pid: int, own: dict) -> dict:
    """The Resource the agent must give a session of this process (but the host's own attributes)."""
    return {**own, "process.pid": pid, "process.executable.name": os.path.basename(os.path.realpath(sys.executable)),
            "k8s.node.name": "node-7", "os.type": "linux"}


def json_attributes(message: dict) -> dict:
    """An OTLP/JSON message's attributes as {key: value}, int64 strings as ints."""
    values = {}
    for kv in message["attributes"]:
        (kind, value), = kv["value"].items()
        values[kv["key"]] = int(value) if kind == "intValue" else value
    return values


def test_every_output_carries_the_resource_of_the_process_that_owns_the_session(
        traffic, start_agent, receiver):
    server, port = traffic.server(name="tl-server", count=2, recv=100, linger_ms=3000, env=SERVER_ENV)
    common = ("--poll-interval", "0.05", "--resource", "process")  # unfiltered: both ends' sessions (ours told by port below)
    ndjson = start_agent("--format", "ndjson", *common, "--otlp-endpoint", receiver.endpoint,
                         "--flush-interval", "0.2", env=AGENT_ENV)
    logs_json = start_agent("--format", "otlp-json", *common, env=AGENT_ENV)
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(port)], stdin=subprocess.PIPE,
                                env={**os.environ, **CLIENT_ENV}) for _ in range(2)]
    try:
        server.events()
        check_every_output(ndjson, logs_json, receiver, port, server, clients)
    finally:
        for client in clients:
            client.stdin.close()
            client.wait(timeout=30)
    for agent in (ndjson, logs_json):
        assert agent.stop()[0] == 0


def check_every_output(ndjson, logs_json, receiver, port, server, clients) -> None:
    owners = {server.pid: expected(server.pid, {"service.name": "inventory", "service.namespace": "shop",
                                                "service.version": "2.0"}),
              **{c.pid: expected(c.pid, {"service.name": "checkout", "deployment.environment.name": "prod"})
                 for c in clients}}

    # NDJSON: the Resource's keys flat on every line, the agent's host.name (not the process's claim).
    ours = lambda ports: port in ports  # noqa: E731
    rows = []
    while len(rows) < 4 and (line := ndjson.read_line(timeout=10)):
        row = json.loads(line)
        rows += [row] if ours((row["network.local.port"], row["network.peer.port"])) else []
    assert sorted(row["process.pid"] for row in rows) == sorted([server.pid, server.pid, *(c.pid for c in clients)])
    for row in rows:
        want = owners[row["process.pid"]]
        assert {key: row.get(key) for key in want} == want
        assert row["host.name"] != "not-this-host" and "telemetry.sdk.name" not in row

    # OTLP/JSON: one ResourceLogs per process in a batch's line, each with its own Resource.
    by_pid: dict[int, list] = {}
    while sum(map(len, by_pid.values())) < 4 and (line := logs_json.read_line(timeout=10)):
        for resource_logs in json.loads(line)["resourceLogs"]:
            attributes = json_attributes(resource_logs["resource"])
            records = [r for r in resource_logs["scopeLogs"][0]["logRecords"]
                       if ours((json_attributes(r)["network.local.port"], json_attributes(r)["network.peer.port"]))]
            if not records:
                continue
            assert {json_attributes(r)["process.pid"] for r in records} == {attributes["process.pid"]}
            assert {key: attributes.get(key) for key in owners[attributes["process.pid"]]} == \
                owners[attributes["process.pid"]]
            by_pid.setdefault(attributes["process.pid"], []).extend(records)
    assert {pid: len(records) for pid, records in by_pid.items()} == {server.pid: 2, **{c.pid: 1 for c in clients}}

    # OTLP: the collector sees the same Resources, the agent's own service only as the scope.
    def exported(records):
        return [(resource, scope, record) for resource, scope, record in records
                if ours((flat(record.attributes)["network.local.port"], flat(record.attributes)["network.peer.port"]))]

    assert receiver.wait_for(lambda r: len(exported(r.log_records_with_resource())) == 4
                             and len(exported(r.spans_with_resource())) == 4)
    for resource, scope, record in exported(receiver.log_records_with_resource() + receiver.spans_with_resource()):
        attributes = flat(resource.attributes)
        pid = flat(record.attributes)["process.pid"]
        assert attributes["process.pid"] == pid
        assert {key: attributes.get(key) for key in owners[pid]} == owners[pid]
        assert scope.name == "otel_tcplife"


def test_resource_agent_keeps_the_agents_own_resource(traffic, start_agent, receiver):
    server, port = traffic.server(name="tl-server", count=1, linger_ms=500, env=SERVER_ENV)
    agent = start_agent("--format", "none", "-L", str(port), "--resource", "agent", "--otlp-endpoint",
                        receiver.endpoint, "--flush-interval", "0.2", env=AGENT_ENV)
    traffic.client(name="tl-client", port=port).events()
    server.events()
    assert receiver.wait_for(lambda r: len(r.log_records()) == 1)
    ((resource, _, _),) = receiver.log_records_with_resource()
    attributes = flat(resource.attributes)
    assert (attributes["service.name"], attributes["k8s.node.name"]) == ("the-agent", "node-7")
    assert "process.pid" not in attributes
    assert agent.stop()[0] == 0


def test_a_process_gone_right_after_its_connection_still_gets_its_container(traffic, start_agent, receiver):
    """The kernel takes the owner's cgroup id while it lives: a client in a cgroup named as
    containerd under kubelet names it, that exits at once, still gets container.id and k8s.pod.uid,
    and nothing read from another process."""
    root = cgroup2_mount()
    pod, container = str(uuid.uuid4()), uuid.uuid4().hex * 2
    path = os.path.join(root, f"tl-kubepods-{pod[:8]}.slice", f"kubepods-besteffort-pod{pod.replace('-', '_')}.slice",
                        f"cri-containerd-{container}.scope")
    os.makedirs(path)
    try:
        server, port = traffic.server(name="tl-server", count=1, recv=100)
        agent = start_agent("--format", "none", "-D", str(port), "--resource", "process", "--otlp-endpoint",
                            receiver.endpoint,
                            "--flush-interval", "0.2", "--poll-interval", "0.5")
        # The client moves itself into the cgroup, connects and exits: long gone when the agent reads it.
        script = (f"open({os.path.join(path, 'cgroup.procs')!r}, 'w').write(str(__import__('os').getpid()))\n"
                  + CLIENT.replace("sys.stdin.read()", "pass"))
        client = subprocess.run([sys.executable, "-c", script, str(port)], env={**os.environ, **CLIENT_ENV},
                                timeout=30)
        assert client.returncode == 0
        server.events()
        assert receiver.wait_for(lambda r: len(r.log_records()) == 1)
        assert agent.stop()[0] == 0
    finally:
        os.rmdir(path)
        os.rmdir(os.path.dirname(path))
        os.rmdir(os.path.dirname(os.path.dirname(path)))
    ((resource, _, record),) = receiver.log_records_with_resource()
    attributes = flat(resource.attributes)
    assert (attributes["container.id"], attributes["k8s.pod.uid"]) == (container, pod)
    # Gone before it was looked up: its pid and comm from the kernel, no service of its own.
    assert attributes["process.pid"] == flat(record.attributes)["process.pid"]
    assert attributes["service.name"] == f"unknown_service:{attributes['process.executable.name']}"
    assert "deployment.environment.name" not in attributes
