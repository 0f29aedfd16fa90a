"""add digest windows and the job's digest link

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OPEN = sa.text("status = 'open'")
_KEY = ["workflow_pk", "subscriber_pk", "step_id", "key_value"]


def upgrade() -> None:
    op.create_table(
        "digest",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("workflow_pk", sa.String(length=24), nullable=False),
        sa.Column("subscriber_pk", sa.String(length=24), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("key_value", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("owner_job_id", sa.String(length=24), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("last_event_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"], ["environment.id"], name=op.f("fk_digest_environment_id_environment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest")),
    )
    op.create_index("uq_digest_open", "digest", _KEY, unique=True, sqlite_where=_OPEN, postgresql_where=_OPEN)
    op.create_index("ix_digest_lookup", "digest", [*_KEY, "last_event_at"])
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("digest_id", sa.String(length=24), nullable=True))
        batch_op.create_index("ix_job_digest_id", ["digest_id"])


def downgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_index("ix_job_digest_id")
        batch_op.drop_column("digest_id")
    op.drop_index("ix_digest_lookup", table_name="digest")
    op.drop_index("uq_digest_open", table_name="digest")
    op.drop_table("digest")
