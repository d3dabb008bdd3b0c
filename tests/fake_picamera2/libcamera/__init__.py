"""Fake `libcamera`: only the names picamera2's users touch (controls.rpi.SyncModeEnum, Transform).

Part of the fake picamera2 stack in tests/fake_picamera2 (see picamera2/__init__.py there).
"""

from __future__ import annotations

import enum


class _SyncModeEnum(enum.IntEnum):
    # Values as in libcamera's rpi vendor controls.
    Off = 0
    Server = 1
    Client = 2


class _Rpi:
    SyncModeEnum = _SyncModeEnum


class controls:  # a module in the real libcamera, hence the lower-case name
    rpi = _Rpi
    SensorTimestamp = "SensorTimestamp"


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        self.hflip, self.vflip, self.transpose = hflip, vflip, transpose


class ColorSpace:
    @staticmethod
    def Rec709() -> str:
        return "Rec709"

    @staticmethod
    def Smpte170m() -> str:
        return "Smpte170m"

    @staticmethod
    def Sycc() -> str:
        return "sYCC"
