"""Disco signaling: the network edge and composition root."""

__version__ = "0.1.0"
