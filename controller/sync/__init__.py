"""The booking-system sync, a service beside the supervisor: it creates and fires bookings.

Two-way and offline-safe (docs/cloud-sync.md): `pull` brings the booking system's bookings
into the local state machine, `push` drains the outbox and sends the box's health, `round`
runs the three steps once (`SupabaseSync`), `worker` repeats them in a thread (`SyncWorker`,
`start_sync`). The Supabase client and the mapping of its rows are the driver's
(`controller.drivers.supabase`); the local database stays the source of truth for what the
box is doing.
"""

from controller.sync.pull import PullResult
from controller.sync.push import GIVE_UP_AFTER, PUSH_BATCH, PushResult
from controller.sync.round import SupabaseSync
from controller.sync.worker import SyncWorker, start_sync

__all__ = [
    "GIVE_UP_AFTER",
    "PUSH_BATCH",
    "PullResult",
    "PushResult",
    "SupabaseSync",
    "SyncWorker",
    "start_sync",
]
