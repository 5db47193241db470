"""responses: survey answers, one row per mail and question (issue 19).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("campaign", sa.String(255), nullable=False),
        sa.Column("occurrence", sa.String(255), nullable=False),
        sa.Column("survey", sa.String(255), nullable=False),
        sa.Column("version_hash", sa.String(64), nullable=False),
        sa.Column("question", sa.String(40), nullable=False),
        sa.Column("value_number", sa.Integer),
        sa.Column("value_text", sa.Text),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("customer_id", "campaign", "occurrence", "question",
                            name="uq_responses_answer"),
    )
    op.create_index("ix_responses_survey_at", "responses",
                    ["survey", "at", "question", "value_number"])


def downgrade() -> None:
    op.drop_index("ix_responses_survey_at", "responses")
    op.drop_table("responses")
