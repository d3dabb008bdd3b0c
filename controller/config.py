"""Settings: one typed object. Defaults < TOML file (`--config` / `EZREC_CONFIG`) < `EZREC_*`.

A bad value stops start-up with one line naming the setting (`ConfigError`), because an
unattended box that guesses is worse than one that refuses to start and says why.
"""

from __future__ import annotations

import os
import re
import socket
import string
import tomllib
from contextvars import ContextVar
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

CameraDriverName = Literal["auto", "picamera2", "v4l2", "synthetic"]
Layout = Literal["side_by_side", "stacked", "pip", "single", "separate"]
Position = Literal[
    "top_left", "top", "top_right", "left", "right", "bottom_left", "bottom", "bottom_right"
]


SHARE_FIELDS = frozenset({"booking", "clip", "key", "token"})
SMTP_SCHEMES = ("smtp://", "smtps://", "smtp+starttls://")


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line that names it."""


def _split_list(value: Any) -> Any:
    # Environment variables carry lists as "a,b,c"; TOML carries real lists.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EZREC_",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    # Where everything lives: state.db, recordings/, media/, uploads/.
    data_dir: Path = Field(default_factory=Path.cwd)
    db_url: str = ""  # default: sqlite:///<data_dir>/state.db
    device_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)

    # Cameras
    camera_driver: CameraDriverName = "auto"
    cameras: int = Field(default=2, ge=1, le=4)
    width: int = Field(default=1280, ge=64, le=4096)
    height: int = Field(default=720, ge=64, le=4096)
    fps: int = Field(default=30, ge=1, le=120)
    # Per camera, 0/90/180/270, for cameras mounted sideways or upside down.
    rotation: Annotated[list[int], NoDecode] = Field(default_factory=list)
    v4l2_devices: Annotated[list[str], NoDecode] = Field(default_factory=list)
    segment_s: int = Field(default=10, ge=1, le=3600)
    preroll_s: float = Field(default=3.0, ge=0, le=60)
    camera_bitrate_kbps: int = Field(default=8000, ge=100, le=100_000)

    # Video build
    layout: Layout = "side_by_side"
    intro: str | None = None
    logo: str | None = None
    logo_position: Position = "top_right"
    user_logo_position: Position = "top_left"
    sponsor_logos: Annotated[list[str], NoDecode] = Field(default_factory=list, max_length=3)
    sponsor_position: Position = "bottom"
    logo_width: float = Field(default=0.12, gt=0, le=1)  # fraction of the frame width
    logo_margin: int = Field(default=24, ge=0, le=500)
    logo_opacity: float = Field(default=1.0, ge=0, le=1)
    video_encoder: Literal["libx264", "h264_v4l2m2m"] = "libx264"
    x264_preset: str = "veryfast"
    crf: int = Field(default=23, ge=0, le=51)
    # The video is built while the slot is recorded, this many seconds at a time, so that only
    # the last chunk remains when it ends (docs/video.md); 0 builds it in one pass afterwards.
    chunk_s: int = Field(default=10, ge=0, le=600)
    # A ceiling on the finished video's bitrate (x264 VBV), so that a venue's uplink keeps pace
    # with the recording (docs/video.md: how to choose it); 0 lets CRF alone decide.
    max_bitrate_kbps: int = Field(default=0, ge=0, le=200_000)
    # CPU priority of the build's encoders: 19, the lowest, lets the cameras always win.
    build_nice: int = Field(default=19, ge=0, le=19)

    # Storage and cloud
    storage_url: str = ""  # default: file://<data_dir>/uploads
    s3_endpoint_url: str | None = None
    s3_sse: str | None = None  # e.g. "AES256" or "aws:kms"
    s3_key_template: str = "{prefix}/{device}/{yyyy}/{mm}/{dd}/{booking}.mp4"
    s3_presign_s: int = Field(default=0, ge=0, le=7 * 24 * 3600)  # 0: no presigned URL
    # S3's minimum part is 5 MiB. Small parts leave less to send when a video built while it
    # was recorded is finished: at most one part plus the last chunk.
    s3_part_size_mb: int = Field(default=5, ge=5, le=5120)
    # Parts in flight. 1 bounds what a power cut costs to one part re-sent; more helps only on
    # fast, high-latency links (a hard kill can then cost that many parts).
    s3_concurrency: int = Field(default=1, ge=1, le=16)
    # How long one S3 call may go without a byte moving before it fails (and is retried).
    s3_timeout_s: float = Field(default=60.0, gt=0, le=600)
    supabase_url: str | None = None
    supabase_key: SecretStr | None = None
    supabase_media_bucket: str = "usermedia"  # Storage bucket of user_settings' bare keys
    supabase_sync_s: float = Field(default=30.0, ge=1, le=3600)  # pull/push/status period

    # API
    api_token: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)

    # Replays: marks, clips, share links, the players' email (docs/replays.md)
    clip_before_s: float = Field(default=25.0, ge=0, le=600)
    clip_after_s: float = Field(default=5.0, ge=0, le=600)
    mark_gpio_pin: str | None = None  # BCM 17, GPIO17 or BOARD11; unset: no button
    share_url_template: str | None = None  # e.g. https://example.com/v/{booking}?t={token}
    share_link_h: float = Field(default=168.0, gt=0, le=168)  # S3 caps presigned URLs at 7 days
    smtp_url: SecretStr | None = None  # smtp:// smtps:// smtp+starttls://user:pass@host:port
    notify_from: str | None = None

    # Reliability
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_s: float = Field(default=30.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    min_free_disk_mb: int = Field(default=1024, ge=0)
    # Kept allocated for the database and freed when the disk fills (drivers/disk_reserve.py).
    disk_reserve_mb: int = Field(default=64, ge=0, le=4096)
    retention_grace_h: float = Field(default=24.0, ge=0)
    max_booking_h: float = Field(default=12.0, gt=0)
    # A database outage the supervisor rides out with nothing recording before it stops
    # petting the systemd watchdog (systemd then restarts it). A recording in progress is
    # never cut for an outage: a restart could not reach the database either.
    db_outage_s: float = Field(default=300.0, ge=0)

    @field_validator("rotation", mode="before")
    @classmethod
    def _rotation_list(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, list):
            for item in value:
                if int(item) not in (0, 90, 180, 270):
                    raise ValueError(f"{item} is not one of 0, 90, 180, 270")
        return value

    @field_validator("sponsor_logos", "v4l2_devices", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("only letters, digits, '-', '_' and '.' are allowed")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not value.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        return value

    @field_validator("mark_gpio_pin", mode="before")
    @classmethod
    def _gpio_pin(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        text = str(value).strip().upper()
        if not re.fullmatch(r"(?:(?:GPIO|BCM)?\d{1,2}|BOARD\d{1,2}|J8:\d{1,2})", text):
            raise ValueError("must be a GPIO pin such as 17, GPIO17 or BOARD11")
        return text

    @field_validator("share_url_template")
    @classmethod
    def _share_template(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = sorted(fields - SHARE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown field {{{unknown[0]}}} (known: {', '.join(sorted(SHARE_FIELDS))})"
            )
        if "booking" not in fields:
            raise ValueError("must contain {booking}")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(SMTP_SCHEMES):
            raise ValueError(f"must start with {', '.join(SMTP_SCHEMES)}")
        return value

    @field_validator("notify_from")
    @classmethod
    def _notify_from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value.strip()):
            raise ValueError("must be an email address such as ezrec@venue.example")
        if not value and info.data.get("smtp_url") is not None:
            raise ValueError("must be set when EZREC_SMTP_URL is (mail needs a sender)")
        return value.strip() if value else None

    @field_validator("db_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite://", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'state.db'}"
        if not self.storage_url:
            self.storage_url = f"file://{self.data_dir / 'uploads'}"
        if len(self.rotation) > self.cameras:
            raise ValueError(
                f"rotation lists {len(self.rotation)} cameras, CAMERAS is {self.cameras}"
            )
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must not be smaller than retry_base_s")
        return self

    # Paths derived from the data dir, so that no other module builds them by hand.
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "recordings" / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "recordings" / "processed"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    def rotation_for(self, camera: int) -> int:
        return int(self.rotation[camera]) if camera < len(self.rotation) else 0

    def public_dict(self) -> dict[str, Any]:
        """Settings for display: secrets are masked, never printed."""
        out = self.model_dump(mode="json")
        for key in ("supabase_key", "api_token", "smtp_url"):
            if out.get(key):
                out[key] = "***"
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The first source wins: environment > load_settings' arguments > the TOML file.
        return (env_settings, init_settings, TomlFile(settings_cls, _toml_file.get()))


# The file of the load_settings call in progress. pydantic-settings takes a TOML file only
# from the class's model_config, not per instance (pydantic-settings#259), and one class
# serves every file, so the path reaches settings_customise_sources through this variable.
_toml_file: ContextVar[Path | None] = ContextVar("ezrec_toml_file", default=None)


class TomlFile(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, with EZREC's spelling of a file and its errors.

    A file may say `fps = 30` or `EZREC_FPS = 30`, at the top or in an `[ezrec]` table. A
    missing file, bad TOML or an unknown key is a ConfigError naming the file, not a file
    quietly ignored.
    """

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        if path is not None and not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        self.known = frozenset(settings_cls.model_fields)  # the base reads the file in __init__
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path}: not valid TOML ({exc})") from None
        table = data.get("ezrec", data)
        values: dict[str, Any] = {}
        for key, value in table.items():
            name = key.lower().removeprefix("ezrec_")
            if name not in self.known:
                raise ConfigError(f"config file {file_path}: unknown setting {key!r}")
            values[name] = value
        return values


def _one_line(exc: ValidationError, file: Path | None) -> str:
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ()) if part != "__root__"]
    name = f"EZREC_{loc[0].upper()}" if loc else "settings"
    value = err.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    where = f" [from {file}]" if file else ""
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    more = f"; and {len(exc.errors()) - 1} more" if len(exc.errors()) > 1 else ""
    return f"bad setting {name}: {msg}{shown}{where}{more}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the Settings, raising ConfigError with one line that names a bad setting."""
    path_str = config_file or os.environ.get("EZREC_CONFIG")
    path = Path(path_str).expanduser() if path_str else None
    # EZREC_CONFIG names the file; it is not a setting of its own.
    unknown = sorted(
        key
        for key in os.environ
        if key.upper().startswith("EZREC_")
        and key.upper() != "EZREC_CONFIG"
        and key[6:].lower() not in Settings.model_fields
    )
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} in the environment")
    token = _toml_file.set(path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from None
    except SettingsError as exc:
        raise ConfigError(f"bad setting: {exc}") from None
    finally:
        _toml_file.reset(token)
