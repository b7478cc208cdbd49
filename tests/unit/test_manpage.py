"""otel-tcplife(8) is written from the parser --help prints: every flag is in it, and it is valid roff."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from otel_tcplife import manpage
from otel_tcplife.cli import EXAMPLES
from otel_tcplife.probe.preflight import CAPABILITIES

from ..support import ROOT


def help_flags() -> list[str]:
    text = subprocess.run([sys.executable, "-m", "otel_tcplife", "--help"], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout
    flags = []
    for line in text.splitlines():
        if line.startswith("  -"):  # an option: "  -p PID, --pid PID   trace this PID only"
            invocation = line.strip().split("  ")[0]
            flags += re.findall(r"(?:^|, )(-[\w-]+)", invocation)
    return flags


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("man") / "otel-tcplife.8"
    path.write_text(subprocess.run([sys.executable, "-m", "otel_tcplife.manpage"], capture_output=True,
                                   text=True, check=True, cwd=ROOT).stdout)
    return str(path)


@pytest.fixture(scope="module")
def rendered(page) -> str:
    """The page as a reader sees it (groff's ASCII output, no overstriking), or its roff source
    with the escapes undone where groff is not installed."""
    if shutil.which("groff"):
        return subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=200n", page], capture_output=True,
                              text=True, check=True, env={**os.environ, "LC_ALL": "C"}).stdout
    return open(page).read().replace("\\-", "-").replace("\\e", "\\")


def section(text: str, name: str) -> str:
    return re.search(rf"^{name}$(.*?)^[A-Z]", text, re.M | re.S).group(1)


def test_every_flag_in_help_is_in_the_man_page(rendered):
    flags = help_flags()
    assert len(flags) > 40 and "--spool-dir" in flags and "-4" in flags  # the help was parsed
    options = section(rendered, "OPTIONS")
    missing = [flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", options)]
    assert missing == []


def test_the_man_page_is_valid_roff_for_man(page):
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    result = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_man_page_has_the_classic_sections_and_names_every_capability(rendered):
    joined = " ".join(rendered.split())
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "REQUIREMENTS", "OPTIONS", "EXAMPLES", "FIELDS",
                    "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{section}$", rendered, re.M), section
    assert "otel-tcplife - trace the lifespan of TCP sessions" in joined
    for capability in CAPABILITIES:
        assert capability in joined
    for line in EXAMPLES.splitlines()[1:]:
        assert line.split("#")[0].strip() in joined


def test_the_prose_must_cover_what_the_code_defines(monkeypatch):
    monkeypatch.setattr(manpage, "CAPABILITY_USES", {"CAP_BPF": "load the probe"})
    with pytest.raises(RuntimeError, match="CAPABILITIES"):
        manpage.render()
