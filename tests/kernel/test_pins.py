"""Kernel state that outlives the agent (pins), and the sessions open before it started.

Every test pins under a root of its own in bpffs (--pin-path), removed at its end, so that no
test touches the production pins (/sys/fs/bpf/otel-tcplife) or another test's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from bench.storm import free_port, run_storm
from otel_tcplife.config import DeliverySettings
from otel_tcplife.probe.ring import MAX_BATCH_RECORDS

from ..otlp_receiver import OtlpReceiver
from ..support import ROOT

HOLD = str(Path(__file__).resolve().parent.parent / "hold.py")


@pytest.fixture
def pin_root():
    root = f"/sys/fs/bpf/otel-tcplife-test-{uuid.uuid4().hex[:12]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)  # removing the link pins detaches the probe


class Agent:
    """The agent, its stdout appended to a file (or discarded), its stderr kept."""

    def __init__(self, pin_root: str, *args: str, out: Path | None = None, env: dict | None = None) -> None:
        self.out = open(out, "ab") if out else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "otel_tcplife", "--pin-path", pin_root, *args],
                                     stdout=self.out, stderr=subprocess.PIPE, cwd=ROOT,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(20) or self.proc.poll() is not None:
            self.kill()
            raise AssertionError(f"agent did not start: {''.join(self.lines)}")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.decode())
            if "tracing via" in self.lines[-1]:
                self._ready.set()
        self._ready.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        self.proc.stderr.close()
        if self.out is not subprocess.DEVNULL:
            self.out.close()

    def stop(self) -> dict:
        """SIGINT; the stats line."""
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(30)
        self._close()
        assert status == 0, "".join(self.lines)
        return json.loads([line for line in self.lines if line.startswith("{")][-1])


def ndjson(path: Path) -> list[dict]:
    """The records in a file; a line torn by a SIGKILL (its record is read again after the restart)
    is skipped."""
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


class Hold:
    """Connections held open between a server and a client process (tests/hold.py)."""

    def __init__(self, count: int, client_bytes: int, server_bytes: int, interval_ms: int = 0) -> None:
        self.server = subprocess.Popen([sys.executable, HOLD, "server", "--count", str(count), "--send",
                                        str(server_bytes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.server.stdout.readline())["port"]
        self.client = subprocess.Popen([sys.executable, HOLD, "client", "--port", str(self.port), "--count",
                                        str(count), "--send", str(client_bytes), "--recv", str(server_bytes),
                                        "--interval-ms", str(interval_ms)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lports: list[int] = []

    def wait_open(self) -> None:
        self.lports = json.loads(self.client.stdout.readline())["lports"]
        assert json.loads(self.server.stdout.readline())["accepted"] == len(self.lports)

    def finish(self) -> None:
        for proc in (self.server, self.client):
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in (self.server, self.client):
            assert json.loads(proc.stdout.readline())["done"]
            proc.wait(10)

    def kill(self) -> None:
        for proc in (self.server, self.client):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()


def sessions_of(records: list[dict], hold: Hold) -> dict[tuple[str, int], list[dict]]:
    """The records of the held connections by (role, client port)."""
    found: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        if r.get("network.peer.port") == hold.port:
            found.setdefault(("client", r["network.local.port"]), []).append(r)
        elif r.get("network.local.port") == hold.port:
            found.setdefault(("server", r["network.peer.port"]), []).append(r)
    return found


def check_exact(found: dict, hold: Hold, client_bytes: int, server_bytes: int) -> None:
    """Both ends of every held connection, once each, with their pids and exact bytes."""
    assert set(found) == {(role, p) for p in hold.lports for role in ("client", "server")}
    for (role, _), records in found.items():
        assert len(records) == 1, records
        (r,) = records
        assert r["tcplife.role"] == role
        if role == "client":
            assert (r["process.pid"], r["tcplife.bytes_sent"], r["tcplife.bytes_received"]) == \
                (hold.client.pid, client_bytes, server_bytes)
        else:
            assert (r["process.pid"], r["tcplife.bytes_sent"], r["tcplife.bytes_received"]) == \
                (hold.server.pid, server_bytes, client_bytes)


def test_sigkill_during_a_storm_with_ndjson_to_a_file_loses_nothing_and_counts_duplicates(pin_root, tmp_path):
    port = free_port()
    out = tmp_path / "sessions.ndjson"
    args = ("--format", "ndjson", "-D", str(port))
    agents = [Agent(pin_root, *args, out=out)]

    def tick(elapsed: float) -> None:
        if elapsed >= 2 and len(agents) == 1:
            agents[0].kill()  # SIGKILL
            agents.append(Agent(pin_root, *args, out=out))  # within a second

    storm = run_storm(seconds=5, rate=2000, workers=2, port=port, tick=tick, tick_seconds=0.25)
    assert len(agents) == 2 and storm["connections"] > 5000, storm
    time.sleep(1)
    stats = agents[1].stop()
    ids = [r["span_id"] for r in ndjson(out) if r.get("network.peer.port") == port]
    print(f"ndjson: {storm['connections']} connections, {len(ids)} records, duplicated {stats['duplicated']}")
    # One client session per connection (-D: the client's side), each delivered at least once.
    assert len(set(ids)) == storm["connections"]
    # Read again and counted; a kill while a batch was being written counts all of it (at most one
    # batch read from the ring buffer), though only part of it got out.
    duplicates = len(ids) - len(set(ids))
    assert duplicates <= stats["duplicated"] <= duplicates + MAX_BATCH_RECORDS


def test_sigkill_during_a_storm_with_a_spool_loses_nothing_and_counts_duplicates(pin_root, tmp_path):
    port = free_port()
    with OtlpReceiver() as receiver:
        args = ("--format", "none", "-D", str(port), "--otlp-endpoint", receiver.endpoint, "--signals", "logs",
                "--spool-dir", str(tmp_path / "spool"))
        agents = [Agent(pin_root, *args)]

        def tick(elapsed: float) -> None:
            if elapsed >= 2 and len(agents) == 1:
                agents[0].kill()
                agents.append(Agent(pin_root, *args))

        storm = run_storm(seconds=5, rate=2000, workers=2, port=port, tick=tick, tick_seconds=0.25)
        assert len(agents) == 2 and storm["connections"] > 5000, storm

        def span_ids() -> list[bytes]:
            return [r.span_id for r in receiver.log_records()
                    if any(a.key == "network.peer.port" and a.value.int_value == port for a in r.attributes)]

        assert receiver.wait_for(lambda r: len(set(span_ids())) >= storm["connections"], timeout=30)
        time.sleep(1)
        stats = agents[1].stop()
    ids = span_ids()
    assert len(set(ids)) == storm["connections"]
    duplicates = len(ids) - len(set(ids))
    print(f"spool: {storm['connections']} connections, {len(ids)} records, duplicated {stats['duplicated']} "
          f"+ {stats['logs']['duplicated']} (spool)")
    # Read again from the ring buffer after having been spooled: sent twice, and counted; a kill while
    # an entry was being written counts that entry's records too (at most a batch), never written.
    # The spool's own `duplicated` (requests sent before the kill, not yet acknowledged) may have arrived.
    assert duplicates <= stats["duplicated"] + stats["logs"]["duplicated"]
    assert stats["duplicated"] <= duplicates + DeliverySettings().batch_size


def test_a_session_born_before_a_restart_and_closed_after_keeps_birth_owner_and_bytes(pin_root, tmp_path):
    out = tmp_path / "sessions.ndjson"
    first = Agent(pin_root, "--format", "ndjson", "--no-pre-existing", out=out)
    hold = Hold(count=3, client_bytes=70001, server_bytes=123457)
    try:
        hold.wait_open()
        opened = time.time_ns()
        first.kill()
        time.sleep(0.3)
        second = Agent(pin_root, "--format", "ndjson", "--no-pre-existing", out=out)
        hold.finish()
        time.sleep(0.5)
        stats = second.stop()
    finally:
        hold.kill()
    found = sessions_of(ndjson(out), hold)
    check_exact(found, hold, 70001, 123457)
    for records in found.values():
        (r,) = records
        assert "tcplife.start_unknown" not in r
        born = int(r["start_time"][:19].replace("-", "").replace("T", "").replace(":", ""))  # sanity below
        assert born
        assert time.mktime(time.strptime(r["start_time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone \
            <= opened / 1e9 + 1
    assert stats["duplicated"] == 0


def test_connections_open_before_the_first_start_are_reported_with_an_unknown_start(pin_root, tmp_path):
    out = tmp_path / "sessions.ndjson"
    before = Hold(count=4, client_bytes=5000, server_bytes=300000)
    during = Hold(count=40, client_bytes=11, server_bytes=22, interval_ms=15)  # opening while the agent starts
    try:
        before.wait_open()
        started = time.time_ns()
        agent = Agent(pin_root, "--format", "ndjson", out=out)
        during.wait_open()
        before.finish()
        during.finish()
        time.sleep(0.5)
        stats = agent.stop()
    finally:
        before.kill()
        during.kill()
    records = ndjson(out)
    found = sessions_of(records, before)
    check_exact(found, before, 5000, 300000)
    for (r,) in found.values():
        assert r["tcplife.start_unknown"] is True
        assert r["start_time"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started // 10**9))
    check_exact(sessions_of(records, during), during, 11, 22)
    assert stats["pre_existing_sessions"] >= 8


def test_the_table_reports_open_sessions_only_when_asked(pin_root, tmp_path):
    hold = Hold(count=1, client_bytes=1, server_bytes=1)
    try:
        hold.wait_open()
        plain = Agent(pin_root, "--no-pin", "--format", "ndjson", "--no-pre-existing", out=tmp_path / "plain")
        hold.finish()
        time.sleep(0.3)
        plain.stop()
    finally:
        hold.kill()
    assert sessions_of(ndjson(tmp_path / "plain"), hold) == {}
    assert not os.path.exists(pin_root)  # --no-pin: nothing pinned


def test_an_agent_of_another_layout_is_discarded_with_a_count_not_misread(pin_root, tmp_path):
    old = Agent(pin_root, "--format", "ndjson", env={"OTEL_TCPLIFE_PIN_VERSION": "v0-test-old"})
    old.kill()  # its probe stays attached: what closes now waits in its ring buffer
    port = free_port()
    storm = run_storm(seconds=0.5, rate=400, workers=1, port=port)
    out = tmp_path / "sessions.ndjson"
    new = Agent(pin_root, "--format", "ndjson", "-D", str(port), out=out)
    hold_storm = run_storm(seconds=0.5, rate=400, workers=1, port=port)
    time.sleep(0.5)
    stats = new.stop()
    stderr = "".join(new.lines)
    assert "removed the pins of another probe layout (v0-test-old)" in stderr
    discarded = int(stderr.split("(v0-test-old): ")[1].split()[0])
    assert discarded >= 2 * storm["connections"]  # both ends, and anything else that closed meanwhile
    assert sorted(os.listdir(pin_root)) != [] and "v0-test-old" not in os.listdir(pin_root)
    ids = {r["span_id"] for r in ndjson(out) if r.get("network.peer.port") == port}
    assert len(ids) == hold_storm["connections"]  # only the new ones: the old ring buffer was not read
    assert stats["duplicated"] == 0


def test_unpin_removes_the_pins_and_the_probe(pin_root):
    Agent(pin_root, "--format", "ndjson").kill()
    assert os.listdir(pin_root)
    done = subprocess.run([sys.executable, "-m", "otel_tcplife", "--unpin", "--pin-path", pin_root],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "removed the pins" in done.stderr
    assert not os.path.exists(pin_root)
    again = subprocess.run([sys.executable, "-m", "otel_tcplife", "--unpin", "--pin-path", pin_root],
                           capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "no pins" in again.stderr


def test_without_a_usable_pin_path_the_agent_runs_unpinned_and_says_so(tmp_path, traffic):
    out = tmp_path / "sessions.ndjson"
    server, port = traffic.server(name="tl-server")
    agent = Agent(str(tmp_path / "not-bpffs"), "--format", "ndjson", "-L", str(port), out=out)
    traffic.client(name="tl-client", port=port).events()
    server.events()
    time.sleep(0.5)
    agent.stop()
    (warning,) = [line for line in agent.lines if "running without pins" in line]
    assert warning.startswith("otel-tcplife: warning: ") and "bpffs" in warning
    assert not (tmp_path / "not-bpffs").exists()
    assert [r["network.local.port"] for r in ndjson(out)] == [port]


def test_only_the_agents_own_pins_are_ever_removed(pin_root, tmp_path):
    # Beside the agent's pins: directories of something else, one named like a version.
    os.makedirs(os.path.join(pin_root, "other-tool"))
    os.makedirs(os.path.join(pin_root, "v9-looks-like-ours"))
    Agent(pin_root, "--format", "ndjson").kill()  # another layout's pins would be discarded here
    done = subprocess.run([sys.executable, "-m", "otel_tcplife", "--unpin", "--pin-path", pin_root],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(pin_root)) == ["other-tool", "v9-looks-like-ours"]
    # Not on bpffs, or a mount point: refused, nothing removed.
    (tmp_path / "root" / "data").mkdir(parents=True)
    for path in (str(tmp_path / "root"), "/sys/fs/bpf"):
        refused = subprocess.run([sys.executable, "-m", "otel_tcplife", "--unpin", "--pin-path", path],
                                 capture_output=True, text=True, cwd=ROOT)
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert (tmp_path / "root" / "data").is_dir() and os.listdir("/sys/fs/bpf")
    # An agent asked to pin at the mount point itself runs unpinned, touching nothing there.
    before = sorted(os.listdir("/sys/fs/bpf"))
    agent = Agent("/sys/fs/bpf", "--format", "ndjson")
    agent.stop()
    assert any("is a mount point" in line for line in agent.lines)
    assert sorted(os.listdir("/sys/fs/bpf")) == before


def test_the_libbpf_reader_of_other_architectures_runs_unpinned_and_says_so(pin_root):
    from otel_tcplife.probe import CoreProbe, ProbeSettings

    probe = CoreProbe(ProbeSettings(pin_root=pin_root, ring_reader="libbpf", local_ports=(1,))).start()
    try:
        assert not probe.pinned and probe.read(0) == []
        (warning,) = [w for w in probe.warnings if "running without pins" in w]
        assert "libbpf" in warning
    finally:
        probe.close()
    assert not os.path.exists(pin_root)
