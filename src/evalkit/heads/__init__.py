"""Heads fitted on cached embeddings."""

from evalkit.heads.linear import LinearProbeConfig, ProbeResult, fit_linear_probe
from evalkit.heads.protocols import PROTOCOLS, Protocol

__all__ = ["PROTOCOLS", "LinearProbeConfig", "ProbeResult", "Protocol", "fit_linear_probe"]
