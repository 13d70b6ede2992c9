"""How each arrival re-evaluated the earlier tasks.

- `arrivals.reeval` (JSON): for an arrival that did not re-score every earlier task (`--reeval
  audit|proof`), the mode, the tasks it re-scored and the hashes it verified for the others
  (the backbone fingerprint and a digest of every module's sha256). NULL: every earlier task
  was re-scored (`full`, and every arrival written before this revision).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("arrivals") as b:
        b.add_column(sa.Column("reeval", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("arrivals") as b:
        b.drop_column("reeval")
