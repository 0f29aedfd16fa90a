"""add topics, preferences, idempotency records and paged fan-out state

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topic",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"], ["environment.id"], name=op.f("fk_topic_environment_id_environment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topic")),
        sa.UniqueConstraint("environment_id", "key", name=op.f("uq_topic_environment_id")),
    )
    op.create_table(
        "topic_subscription",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("topic_pk", sa.String(length=24), nullable=False),
        sa.Column("subscriber_pk", sa.String(length=24), nullable=False),
        sa.Column("identifier", sa.String(length=600), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("context_keys", sa.JSON(), nullable=False),
        sa.Column("preferences", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_topic_subscription_environment_id_environment"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_pk"],
            ["subscriber.id"],
            name=op.f("fk_topic_subscription_subscriber_pk_subscriber"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["topic_pk"], ["topic.id"], name=op.f("fk_topic_subscription_topic_pk_topic"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topic_subscription")),
        sa.UniqueConstraint("topic_pk", "identifier", name=op.f("uq_topic_subscription_topic_pk")),
    )
    op.create_index("ix_topic_subscription_subscriber_pk", "topic_subscription", ["subscriber_pk"])
    op.create_table(
        "preference",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("subscriber_pk", sa.String(length=24), nullable=False),
        sa.Column("workflow_pk", sa.String(length=24), nullable=True),
        sa.Column("scope", sa.String(length=24), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=True),
        sa.Column("context_key", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"], ["environment.id"], name=op.f("fk_preference_environment_id_environment")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_pk"],
            ["subscriber.id"],
            name=op.f("fk_preference_subscriber_pk_subscriber"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_pk"],
            ["workflow.id"],
            name=op.f("fk_preference_workflow_pk_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preference")),
        sa.UniqueConstraint(
            "subscriber_pk", "scope", "context_key", name=op.f("uq_preference_subscriber_pk")
        ),
    )
    op.create_table(
        "idempotency_record",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_idempotency_record_environment_id_environment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_record")),
        sa.UniqueConstraint("environment_id", "key", name=op.f("uq_idempotency_record_environment_id")),
    )
    op.create_index("ix_idempotency_record_expires_at", "idempotency_record", ["expires_at"])
    with op.batch_alter_table("trigger_event") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="single", nullable=False))
        batch_op.add_column(sa.Column("cursor", sa.JSON(), nullable=True))
    with op.batch_alter_table("notification") as batch_op:
        batch_op.add_column(sa.Column("topics", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("notification") as batch_op:
        batch_op.drop_column("topics")
    with op.batch_alter_table("trigger_event") as batch_op:
        batch_op.drop_column("cursor")
        batch_op.drop_column("kind")
    op.drop_index("ix_idempotency_record_expires_at", table_name="idempotency_record")
    op.drop_table("idempotency_record")
    op.drop_table("preference")
    op.drop_index("ix_topic_subscription_subscriber_pk", table_name="topic_subscription")
    op.drop_table("topic_subscription")
    op.drop_table("topic")
