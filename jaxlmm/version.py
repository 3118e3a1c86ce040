"""The jaxlmm version (written into saved fits)."""

__version__ = "0.1.0"
