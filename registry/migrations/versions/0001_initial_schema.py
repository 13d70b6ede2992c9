"""Initial schema: backbones, tasks, runs, prefixes, lineage, evaluations, embeddings, arrivals.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backbones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("n_params", sa.BigInteger(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backbones")),
        sa.UniqueConstraint("fingerprint", name="uq_backbones_fingerprint"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("packages", sa.JSON(), nullable=False),
        sa.Column("backbone_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("data_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("name", name="uq_tasks_name"),
    )
    op.create_table(
        "arrivals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_arrivals_task_id_tasks"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arrivals")),
    )
    op.create_index("ix_arrivals_method_position", "arrivals", ["method", "position"], unique=False)
    op.create_index("ix_arrivals_task_id", "arrivals", ["task_id"], unique=False)

    op.create_table(
        "prefixes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("backbone_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("n_bytes", sa.BigInteger(), nullable=False),
        sa.Column("n_trainable", sa.BigInteger(), nullable=False),
        sa.Column("n_stored", sa.BigInteger(), nullable=False),
        sa.Column("optimizer_path", sa.String(length=300), nullable=True),
        sa.Column("optimizer_sha256", sa.String(length=64), nullable=True),
        sa.Column("train_steps", sa.Integer(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=False),
        sa.Column("final_loss", sa.Float(), nullable=True),
        sa.Column("losses", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'broken')", name=op.f("ck_prefixes_status")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_prefixes_version_positive")),
        sa.ForeignKeyConstraint(
            ["backbone_id"],
            ["backbones.id"],
            name=op.f("fk_prefixes_backbone_id_backbones"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_prefixes_run_id_runs"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_prefixes_task_id_tasks"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prefixes")),
        sa.UniqueConstraint("task_id", "version", name="uq_prefixes_task_id_version"),
    )
    op.create_index("ix_prefixes_backbone_id", "prefixes", ["backbone_id"], unique=False)
    op.create_index("ix_prefixes_run_id", "prefixes", ["run_id"], unique=False)
    op.create_index(
        "uq_prefixes_current_task_id",
        "prefixes",
        ["task_id"],
        unique=True,
        sqlite_where=sa.text("is_current"),
        postgresql_where=sa.text("is_current"),
    )

    op.create_table(
        "task_embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_embeddings_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_embeddings")),
    )
    op.create_index(
        "ix_task_embeddings_method_task_id", "task_embeddings", ["method", "task_id"], unique=False
    )

    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix_id", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(length=64), server_default="prefix", nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("predictions_sha256", sa.String(length=64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["prefix_id"],
            ["prefixes.id"],
            name=op.f("fk_evaluations_prefix_id_prefixes"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_evaluations_task_id_tasks"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index("ix_evaluations_prefix_id_id", "evaluations", ["prefix_id", "id"], unique=False)
    op.create_index(
        "ix_evaluations_task_id_created_at_id",
        "evaluations",
        ["task_id", "created_at", "id"],
        unique=False,
    )

    op.create_table(
        "prefix_lineage",
        sa.Column("prefix_id", sa.Integer(), nullable=False),
        sa.Column("source_prefix_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["prefix_id"],
            ["prefixes.id"],
            name=op.f("fk_prefix_lineage_prefix_id_prefixes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_prefix_id"],
            ["prefixes.id"],
            name=op.f("fk_prefix_lineage_source_prefix_id_prefixes"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("prefix_id", "source_prefix_id", name=op.f("pk_prefix_lineage")),
    )
    op.create_index(
        "ix_prefix_lineage_source_prefix_id", "prefix_lineage", ["source_prefix_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_prefix_lineage_source_prefix_id", "prefix_lineage")

    op.drop_table("prefix_lineage")
    op.drop_index("ix_evaluations_task_id_created_at_id", "evaluations")
    op.drop_index("ix_evaluations_prefix_id_id", "evaluations")

    op.drop_table("evaluations")
    op.drop_index("ix_task_embeddings_method_task_id", "task_embeddings")

    op.drop_table("task_embeddings")
    op.drop_index(
        "uq_prefixes_current_task_id",
        "prefixes",
        sqlite_where=sa.text("is_current"),
        postgresql_where=sa.text("is_current"),
    )
    op.drop_index("ix_prefixes_run_id", "prefixes")
    op.drop_index("ix_prefixes_backbone_id", "prefixes")

    op.drop_table("prefixes")
    op.drop_index("ix_arrivals_task_id", "arrivals")
    op.drop_index("ix_arrivals_method_position", "arrivals")

    op.drop_table("arrivals")
    op.drop_table("tasks")
    op.drop_table("runs")
    op.drop_table("backbones")
