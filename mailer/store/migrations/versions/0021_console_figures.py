"""The console's computed figures (issue 23 part 3): segment sizes and funnels and the
forecast, computed by `mailer console refresh` or the daemon, one row a kind, with the
hash of the workspace they were computed from.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "console_figures",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("as_of", sa.DateTime, nullable=False),
        sa.Column("computed_at", sa.DateTime, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("computed_by", sa.String(32), nullable=False),
        sa.Column("document", Json, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_figures")
