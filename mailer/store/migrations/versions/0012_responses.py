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
    op.create_index("ix_responses_survey_at", "responses", ["survey", "at"])
    op.create_index("ix_responses_survey_question", "responses",
                    ["survey", "question", "value_number", "at"])
    op.create_index("ix_responses_survey_mail", "responses",
                    ["survey", "customer_id", "campaign", "occurrence", "at"])
    # choices are short (200 characters at most); comments need not fit an index entry
    short = sa.text("value_number IS NULL AND length(value_text) <= 200")
    op.create_index("ix_responses_survey_choice", "responses", ["survey", "question", "value_text"],
                    sqlite_where=short, postgresql_where=short)


def downgrade() -> None:
    op.drop_index("ix_responses_survey_choice", "responses")
    op.drop_index("ix_responses_survey_mail", "responses")
    op.drop_index("ix_responses_survey_question", "responses")
    op.drop_index("ix_responses_survey_at", "responses")
    op.drop_table("responses")
