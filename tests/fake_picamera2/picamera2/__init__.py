"""A fake `picamera2` for tests, injected at the import boundary (put tests/fake_picamera2 first
on sys.path): the real library only installs on a Raspberry Pi with libcamera.

It follows raspberrypi/picamera2's public signatures for everything the driver touches
(Picamera2, encoders.H264Encoder, outputs.Output, outputs.PyavOutput, libcamera.controls) and
feeds real H.264 made by ffmpeg, so recordings on disk are real video. The simulated cameras and
their failures are set up through `picamera2._fake_hardware` (not part of the real API).
"""

from .picamera2 import CompletedRequest, Picamera2

__all__ = ["CompletedRequest", "Picamera2"]
