"""create the job store

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_user",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_user")),
        sa.UniqueConstraint("username", name=op.f("uq_admin_user_username")),
    )
    op.create_table(
        "environment",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=False),
        sa.Column("api_key_prefix", sa.String(length=16), nullable=False),
        sa.Column("api_key", sa.String(length=128), nullable=False),
        sa.Column("hmac_required", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment")),
        sa.UniqueConstraint("api_key_hash", name=op.f("uq_environment_api_key_hash")),
        sa.UniqueConstraint("identifier", name=op.f("uq_environment_identifier")),
    )
    op.create_table(
        "server_setting",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_server_setting")),
    )
    op.create_table(
        "subscriber",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("subscriber_id", sa.String(length=255), nullable=False),
        sa.Column("first_name", sa.String(length=255), nullable=True),
        sa.Column("last_name", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("avatar", sa.Text(), nullable=True),
        sa.Column("locale", sa.String(length=32), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=True),
        sa.Column("is_online", sa.Boolean(), nullable=False),
        sa.Column("last_online_at", sa.DateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_subscriber_environment_id_environment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber")),
        sa.UniqueConstraint("environment_id", "subscriber_id", name=op.f("uq_subscriber_environment_id")),
    )
    op.create_table(
        "workflow",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("preferences", sa.JSON(), nullable=True),
        sa.Column("payload_schema", sa.JSON(), nullable=True),
        sa.Column("validate_payload", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_workflow_environment_id_environment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow")),
        sa.UniqueConstraint("environment_id", "workflow_id", name=op.f("uq_workflow_environment_id")),
    )
    op.create_table(
        "step",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("workflow_pk", sa.String(length=24), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("control_values", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_pk"],
            ["workflow.id"],
            name=op.f("fk_step_workflow_pk_workflow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step")),
        sa.UniqueConstraint("workflow_pk", "step_id", name=op.f("uq_step_workflow_pk")),
    )
    op.create_table(
        "trigger_event",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("workflow_pk", sa.String(length=24), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("actor", sa.JSON(), nullable=True),
        sa.Column("context", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_after", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_trigger_event_environment_id_environment"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_pk"], ["workflow.id"], name=op.f("fk_trigger_event_workflow_pk_workflow")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_event")),
        sa.UniqueConstraint("environment_id", "transaction_id", name=op.f("uq_trigger_event_environment_id")),
    )
    with op.batch_alter_table("trigger_event", schema=None) as batch_op:
        batch_op.create_index("ix_trigger_event_status_created_at", ["status", "created_at"], unique=False)

    op.create_table(
        "notification",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("trigger_id", sa.String(length=24), nullable=False),
        sa.Column("workflow_pk", sa.String(length=24), nullable=False),
        sa.Column("subscriber_pk", sa.String(length=24), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("context_keys", sa.JSON(), nullable=False),
        sa.Column("expansion", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_notification_environment_id_environment"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_pk"],
            ["subscriber.id"],
            name=op.f("fk_notification_subscriber_pk_subscriber"),
        ),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["trigger_event.id"],
            name=op.f("fk_notification_trigger_id_trigger_event"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_pk"], ["workflow.id"], name=op.f("fk_notification_workflow_pk_workflow")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
        sa.UniqueConstraint("trigger_id", "subscriber_pk", name=op.f("uq_notification_trigger_id")),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notification_expansion_created_at", ["expansion", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_notification_transaction_id"), ["transaction_id"], unique=False)

    op.create_table(
        "job",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("notification_id", sa.String(length=24), nullable=False),
        sa.Column("subscriber_pk", sa.String(length=24), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("step_pk", sa.String(length=24), nullable=True),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.String(length=24), nullable=True),
        sa.Column("step", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"], ["environment.id"], name=op.f("fk_job_environment_id_environment")
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notification.id"],
            name=op.f("fk_job_notification_id_notification"),
        ),
        sa.ForeignKeyConstraint(
            ["step_pk"], ["step.id"], name=op.f("fk_job_step_pk_step"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_pk"], ["subscriber.id"], name=op.f("fk_job_subscriber_pk_subscriber")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_notification_id"), ["notification_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index("ix_job_status_run_at", ["status", "run_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_transaction_id"), ["transaction_id"], unique=False)

    op.create_table(
        "execution_detail",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("job_id", sa.String(length=24), nullable=False),
        sa.Column("notification_id", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_execution_detail_job_id_job")),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notification.id"],
            name=op.f("fk_execution_detail_notification_id_notification"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_detail")),
    )
    with op.batch_alter_table("execution_detail", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_execution_detail_job_id"), ["job_id"], unique=False)

    op.create_table(
        "message",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("environment_id", sa.String(length=24), nullable=False),
        sa.Column("notification_id", sa.String(length=24), nullable=False),
        sa.Column("job_id", sa.String(length=24), nullable=False),
        sa.Column("subscriber_pk", sa.String(length=24), nullable=False),
        sa.Column("workflow_pk", sa.String(length=24), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("avatar", sa.Text(), nullable=True),
        sa.Column("cta", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("context_key", sa.String(length=1000), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False),
        sa.Column("seen", sa.Boolean(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=True),
        sa.Column("seen_at", sa.DateTime(), nullable=True),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("snoozed_until", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
            name=op.f("fk_message_environment_id_environment"),
        ),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_message_job_id_job")),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notification.id"],
            name=op.f("fk_message_notification_id_notification"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_pk"], ["subscriber.id"], name=op.f("fk_message_subscriber_pk_subscriber")
        ),
        sa.ForeignKeyConstraint(
            ["workflow_pk"], ["workflow.id"], name=op.f("fk_message_workflow_pk_workflow")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
        sa.UniqueConstraint("job_id", name=op.f("uq_message_job_id")),
    )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_inbox", ["subscriber_pk", "context_key", "channel", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_inbox")

    op.drop_table("message")
    with op.batch_alter_table("execution_detail", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_execution_detail_job_id"))

    op.drop_table("execution_detail")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_transaction_id"))
        batch_op.drop_index("ix_job_status_run_at")
        batch_op.drop_index(batch_op.f("ix_job_parent_id"))
        batch_op.drop_index(batch_op.f("ix_job_notification_id"))

    op.drop_table("job")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_transaction_id"))
        batch_op.drop_index("ix_notification_expansion_created_at")

    op.drop_table("notification")
    with op.batch_alter_table("trigger_event", schema=None) as batch_op:
        batch_op.drop_index("ix_trigger_event_status_created_at")

    op.drop_table("trigger_event")
    op.drop_table("step")
    op.drop_table("workflow")
    op.drop_table("subscriber")
    op.drop_table("server_setting")
    op.drop_table("environment")
    op.drop_table("admin_user")
