"""Streams, jobs and stored task data; the module kind of a prefix.

- `streams`: a registry holds many named streams. The one implicit stream of a workspace made by
  an earlier version becomes `default`: its arrivals and its positioned evaluations move there.
- `arrivals.stream_id`, unique (stream, method, position) and (stream, method, task);
  `evaluations.stream_id`, unique (task, method, stream, position). Rows an earlier version
  may have written twice are collapsed first (the first done arrival of a position wins, as the
  earlier code read them; the oldest evaluation wins, as `ledger.find` read them).
- `jobs`: arrivals as jobs with a state, attempts and a lease.
- `datasets`: a task's examples stored once, content-addressed; `prefixes.data_sha256` says
  which data a prefix version was trained and evaluated on (NULL for prefixes registered
  before: their data is stored the first time they are re-evaluated).
- `prefixes.kind`: the per-task module's registered kind ("prefix" for every earlier row).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_STREAM = "default"


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_streams")),
        sa.UniqueConstraint("name", name="uq_streams_name"),
    )
    op.create_table(
        "datasets",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("n_bytes", sa.BigInteger(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_eval", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_datasets")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed', 'cancelled')",
            name=op.f("ck_jobs_state"),
        ),
        sa.ForeignKeyConstraint(
            ["stream_id"],
            ["streams.id"],
            name=op.f("fk_jobs_stream_id_streams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_state_stream_id_id", "jobs", ["state", "stream_id", "id"])
    op.create_index(
        "uq_jobs_stream_id_task",
        "jobs",
        ["stream_id", "task"],
        unique=True,
        sqlite_where=sa.text("state <> 'cancelled'"),
        postgresql_where=sa.text("state <> 'cancelled'"),
    )

    bind = op.get_bind()
    streams = sa.table(
        "streams",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(timezone.utc)
    op.bulk_insert(streams, [{"name": DEFAULT_STREAM, "description": "", "created_at": now}])
    default_id = bind.execute(
        sa.text("SELECT id FROM streams WHERE name = :n"), {"n": DEFAULT_STREAM}
    ).scalar_one()

    # --- arrivals: into the default stream, duplicates collapsed, then constrained
    with op.batch_alter_table("arrivals") as b:
        b.add_column(sa.Column("stream_id", sa.Integer(), nullable=True))
    bind.execute(sa.text("UPDATE arrivals SET stream_id = :s"), {"s": default_id})
    bind.execute(
        sa.text(
            "DELETE FROM arrivals WHERE id NOT IN (SELECT keep FROM (SELECT COALESCE("
            "MIN(CASE WHEN status = 'done' THEN id END), MIN(id)) AS keep FROM arrivals "
            "GROUP BY method, position) AS k)"
        )
    )
    bind.execute(
        sa.text(
            "DELETE FROM arrivals WHERE id NOT IN (SELECT keep FROM (SELECT MIN(id) AS keep "
            "FROM arrivals GROUP BY method, task_id) AS k)"
        )
    )
    with op.batch_alter_table("arrivals") as b:
        b.alter_column("stream_id", existing_type=sa.Integer(), nullable=False)
        b.create_foreign_key(
            op.f("fk_arrivals_stream_id_streams"),
            "streams",
            ["stream_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        b.drop_index("ix_arrivals_method_position")
        b.create_unique_constraint(
            "uq_arrivals_stream_id_method_position", ["stream_id", "method", "position"]
        )
        b.create_unique_constraint(
            "uq_arrivals_stream_id_method_task_id", ["stream_id", "method", "task_id"]
        )

    # --- evaluations: positioned ones into the default stream, duplicates collapsed
    with op.batch_alter_table("evaluations") as b:
        b.add_column(sa.Column("stream_id", sa.Integer(), nullable=True))
    bind.execute(
        sa.text("UPDATE evaluations SET stream_id = :s WHERE position IS NOT NULL"),
        {"s": default_id},
    )
    bind.execute(
        sa.text(
            "DELETE FROM evaluations WHERE position IS NOT NULL AND id NOT IN (SELECT keep "
            "FROM (SELECT MIN(id) AS keep FROM evaluations WHERE position IS NOT NULL "
            "GROUP BY task_id, method, position) AS k)"
        )
    )
    with op.batch_alter_table("evaluations") as b:
        b.create_foreign_key(
            op.f("fk_evaluations_stream_id_streams"),
            "streams",
            ["stream_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        b.create_index("ix_evaluations_stream_id_position", ["stream_id", "position"])
        b.create_unique_constraint(
            "uq_evaluations_task_id_method_stream_id_position",
            ["task_id", "method", "stream_id", "position"],
        )

    # --- prefixes: module kind, stored data
    with op.batch_alter_table("prefixes") as b:
        b.add_column(
            sa.Column("kind", sa.String(length=32), server_default="prefix", nullable=False)
        )
        b.add_column(sa.Column("data_sha256", sa.String(length=64), nullable=True))
        b.create_foreign_key(
            op.f("fk_prefixes_data_sha256_datasets"),
            "datasets",
            ["data_sha256"],
            ["sha256"],
            ondelete="RESTRICT",
        )
        b.create_index("ix_prefixes_data_sha256", ["data_sha256"])


def downgrade() -> None:
    with op.batch_alter_table("prefixes") as b:
        b.drop_index("ix_prefixes_data_sha256")
        b.drop_constraint(op.f("fk_prefixes_data_sha256_datasets"), type_="foreignkey")
        b.drop_column("data_sha256")
        b.drop_column("kind")
    with op.batch_alter_table("evaluations") as b:
        b.drop_constraint("uq_evaluations_task_id_method_stream_id_position", type_="unique")
        b.drop_index("ix_evaluations_stream_id_position")
        b.drop_constraint(op.f("fk_evaluations_stream_id_streams"), type_="foreignkey")
        b.drop_column("stream_id")
    with op.batch_alter_table("arrivals") as b:
        b.drop_constraint("uq_arrivals_stream_id_method_task_id", type_="unique")
        b.drop_constraint("uq_arrivals_stream_id_method_position", type_="unique")
        b.create_index("ix_arrivals_method_position", ["method", "position"])
        b.drop_constraint(op.f("fk_arrivals_stream_id_streams"), type_="foreignkey")
        b.drop_column("stream_id")
    op.drop_index("uq_jobs_stream_id_task", "jobs")
    op.drop_index("ix_jobs_state_stream_id_id", "jobs")
    op.drop_table("jobs")
    op.drop_table("datasets")
    op.drop_table("streams")
