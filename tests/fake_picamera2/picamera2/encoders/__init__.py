"""Fake `picamera2.encoders`: the real package's names for what the driver uses."""

from .encoder import Encoder, Quality
from .h264_encoder import H264Encoder

__all__ = ["Encoder", "H264Encoder", "Quality"]
