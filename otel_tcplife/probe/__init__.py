"""The kernel probe: loads bpf/tcplife.bpf.c and reads its closed-session events."""

from ..config import ATTACH_MODES, BACKENDS, ProbeSettings
from .backend import open_probe
from .core import CoreProbe

__all__ = ["ATTACH_MODES", "BACKENDS", "CoreProbe", "ProbeSettings", "open_probe"]
