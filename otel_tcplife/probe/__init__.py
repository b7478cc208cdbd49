"""The kernel probe: loads bpf/tcplife.bpf.c and reads its closed-session events."""

from ..config import ATTACH_MODES, ProbeSettings
from .core import CoreProbe

__all__ = ["ATTACH_MODES", "CoreProbe", "ProbeSettings"]
