"""The agent run the way deploy/otel-tcplife.service runs it: a user of its own (DynamicUser=),
the unit's capabilities and no others, no new privileges, the unit's flags; set up with setpriv
as systemd would. Only the output target differs: stdout here, the journal there."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess

from otel_tcplife.probe.preflight import CAPABILITIES, CAPABILITY_NAMES

from ..support import lines_until_started, python_for_other_users
from ..unit.test_deploy import exec_start, unit_list, unit_settings

DYNAMIC_USERS = range(61184, 65520)  # the uids systemd allocates for DynamicUser=
CAPABILITY_NUMBERS = {name: number for number, name in CAPABILITY_NAMES.items()}


def dynamic_uid() -> int:
    """A uid in DynamicUser='s range that no account, group or running process has."""
    taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                taken.add(entry.stat().st_uid)
            except OSError:  # ended meanwhile
                pass
    return next(uid for uid in reversed(DYNAMIC_USERS) if uid not in taken)


def the_units_flags() -> list[str]:
    """ExecStart's flags, the output going to stdout as NDJSON instead of the journal (its own tests
    cover --format journald against a real journald)."""
    args = [arg for arg in exec_start()[1:] if not arg.startswith("$")]
    if "--format" in args:
        args[args.index("--format") + 1] = "ndjson"
    return args


@contextlib.contextmanager
def unit_pins(uid: int):
    """The pins' directory as the unit's ExecStartPre= makes it, owned by the unit's user (a test's
    own, not the unit's path): its path, for --pin-path; removed after (detaching what is pinned)."""
    pins = f"/sys/fs/bpf/otel-tcplife-unit-test-{uid}-{os.getpid()}"
    os.mkdir(pins, 0o700)
    os.chown(pins, uid, uid)
    try:
        yield pins
    finally:
        shutil.rmtree(pins, ignore_errors=True)


def as_the_unit(capabilities: list[str], *args: str, uid: int | None = None) -> list[str]:
    service = unit_settings()["Service"]
    assert service["DynamicUser"] == ["yes"] and service["NoNewPrivileges"] == ["yes"]
    uid = dynamic_uid() if uid is None else uid
    caps = ",".join(f"+{name.removeprefix('CAP_').lower()}" for name in capabilities)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            f"--inh-caps=-all{',' + caps if caps else ''}", f"--ambient-caps=-all{',' + caps if caps else ''}",
            f"--bounding-set=-all{',' + caps if caps else ''}", python_for_other_users(), "-m", "otel_tcplife", *args]


def parse_status(text: str) -> dict[str, str]:
    """/proc/PID/status as {field: value}."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_the_agent_as_the_unit_runs_it_reports_sessions(traffic):
    capabilities = unit_list("AmbientCapabilities")
    assert capabilities == list(CAPABILITIES)
    server, port = traffic.server(name="tl-server", linger_ms=300)
    uid = dynamic_uid()
    with unit_pins(uid) as pins:
        proc = subprocess.Popen(as_the_unit(capabilities, *the_units_flags(), "-L", str(port), "--pin-path", pins,
                                            uid=uid), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            started = lines_until_started(proc)
            with open(f"/proc/{proc.pid}/status") as file:
                status = parse_status(file.read())
            traffic.client(name="tl-client", port=port).events()
            server.events()
            row = json.loads(proc.stdout.readline())
            proc.send_signal(signal.SIGTERM)  # the unit's KillSignal=
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            pinned = os.listdir(pins)
    assert len(pinned) == 1  # one layout version's pins, made by the unit's user
    # Exactly the unit's capabilities, in every set, as a user that is not root.
    mask = sum(1 << CAPABILITY_NUMBERS[name] for name in capabilities)
    assert {key: int(status[key], 16) for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapEff", "CapPrm", "CapBnd", "CapAmb"), mask)
    assert int(status["Uid"].split()[0]) in DYNAMIC_USERS and status["NoNewPrivs"] == "1"
    assert started == []  # no warning: nothing is missing
    # A real session, attributed to root's process by its executable (CAP_SYS_PTRACE).
    assert (row["process.pid"], row["thread.name"], row["network.local.port"]) == (server.pid, "tl-server", port)
    assert row["process.executable.name"].startswith("python")
    assert proc.returncode == 0 and json.loads(stderr.splitlines()[-1])["sessions_observed"] >= 1


def test_without_cap_bpf_the_agent_stops_with_one_line_naming_it():
    capabilities = [name for name in unit_list("AmbientCapabilities") if name != "CAP_BPF"]
    result = subprocess.run(as_the_unit(capabilities, *the_units_flags()), cwd="/", capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("otel-tcplife: error: permission denied: missing CAP_BPF: "), line
