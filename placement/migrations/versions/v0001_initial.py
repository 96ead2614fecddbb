"""Initial state store schema: placements, journal, meta (serial, lineage), locks, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "placements",
        sa.Column("workload", sa.String(128), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("region", sa.String(128), nullable=False),
        sa.Column("zone", sa.String(128), nullable=True),
        sa.Column("offer_id", sa.String(512), nullable=False),
        sa.Column("resource_id", sa.String(512), nullable=True),
        sa.Column("idempotency_key", sa.String(256), nullable=False),
        sa.Column("plan_digest", sa.String(80), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("workload", "replica", name="pk_placements"),
    )
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("plan_digest", sa.String(80), nullable=False),
        sa.Column("action_id", sa.String(256), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("workload", sa.String(128), nullable=False),
        sa.Column("replica", sa.Integer, nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        _ts("at"),
        sa.CheckConstraint("phase IN ('started', 'succeeded', 'failed')", name="ck_journal_phase"),
        sa.CheckConstraint("action IN ('create', 'delete', 'move', 'keep')", name="ck_journal_action"),
    )
    op.create_index("ix_journal_plan_action", "journal", ["plan_digest", "action_id"])
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("lock_id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        _ts("acquired_at"),
        _ts("expires_at", nullable=True),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _ts("at"),
        sa.Column("who", sa.String(256), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("plan_digest", sa.String(80), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.bulk_insert(meta, [{"key": "serial", "value": "0"}, {"key": "lineage", "value": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_table("locks")
    op.drop_table("meta")
    op.drop_index("ix_journal_plan_action", table_name="journal")
    op.drop_table("journal")
    op.drop_table("placements")
