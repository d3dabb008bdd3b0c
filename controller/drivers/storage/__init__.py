"""Where finished videos go. This package's top level is the interface only (`base`, `keys`):
the backends are `storage.local` and `storage.s3`, and the one chosen from the settings comes
from `controller.context.open_storage`, so nothing here imports a backend."""

from controller.drivers.storage.base import (
    Checkpoint,
    FileCheckpoint,
    GrowingUpload,
    ProgressFn,
    ServerSideCopy,
    Storage,
    StorageError,
    StoredObject,
    UploadInterrupted,
    local_source,
    retention_due,
)
from controller.drivers.storage.keys import KeyScheme

__all__ = [
    "Checkpoint",
    "FileCheckpoint",
    "GrowingUpload",
    "KeyScheme",
    "ProgressFn",
    "ServerSideCopy",
    "Storage",
    "StorageError",
    "StoredObject",
    "UploadInterrupted",
    "local_source",
    "retention_due",
]
