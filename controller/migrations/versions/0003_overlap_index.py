"""An index for the overlap check: a camera's live bookings only, not its whole history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_bookings_camera_state_start", "bookings", ["camera_id", "state", "start_time"]
    )


def downgrade() -> None:
    op.drop_index("ix_bookings_camera_state_start", "bookings")
