"""add provider integrations

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integration",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("provider_id", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("identifier", sa.String(length=255), nullable=False),
        sa.Column("credentials", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"], ["environment.id"], name=op.f("fk_integration_environment_id_environment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration")),
        sa.UniqueConstraint("environment_id", "identifier", name=op.f("uq_integration_environment_id")),
    )
    op.create_index("ix_integration_environment_id_channel", "integration", ["environment_id", "channel"])


def downgrade() -> None:
    op.drop_index("ix_integration_environment_id_channel", table_name="integration")
    op.drop_table("integration")
