"""Fake `picamera2.outputs`: Output and PyavOutput, as exported by the real package."""

from .output import Output
from .pyavoutput import PyavOutput

__all__ = ["Output", "PyavOutput"]
