"""Bookings, their transition history, per-camera slot locks and a small key-value table.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128)),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("end_time", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("raw_dir", sa.Text()),
        sa.Column("processed_path", sa.Text()),
        sa.Column("video_url", sa.Text()),
        sa.Column("progress", sa.Float()),
        sa.Column("progress_stage", sa.String(32)),
        sa.Column("extra_json", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_bookings_state_start", "bookings", ["state", "start_time"])
    op.create_index("ix_bookings_state_end", "bookings", ["state", "end_time"])
    op.create_index("ix_bookings_state_next", "bookings", ["state", "next_attempt_at"])
    op.create_index("ix_bookings_camera_start", "bookings", ["camera_id", "start_time"])
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "booking_id",
            sa.String(64),
            sa.ForeignKey("bookings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.UniqueConstraint("booking_id", "seq", name="uq_transitions_booking_seq"),
    )
    op.create_table(
        "slot_locks",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("counter", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "kv",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kv")
    op.drop_table("slot_locks")
    op.drop_table("transitions")
    op.drop_index("ix_bookings_camera_start", "bookings")
    op.drop_index("ix_bookings_state_next", "bookings")
    op.drop_index("ix_bookings_state_end", "bookings")
    op.drop_index("ix_bookings_state_start", "bookings")
    op.drop_table("bookings")
