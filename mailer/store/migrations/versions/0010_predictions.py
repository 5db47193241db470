"""predictions and prediction_fits: each customer's purchase predictions from the latest
`mailer predict`, and every fit (its data, parameters or reason, and holdout check).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True,
                  autoincrement=False),
        sa.Column("p_alive", sa.Float, nullable=False),
        sa.Column("expected_orders_90d", sa.Float, nullable=False),
        sa.Column("predicted_clv_365d", sa.BigInteger, nullable=False),
        sa.Column("next_order_expected_at", sa.DateTime),
        sa.Column("churn_risk", sa.String(8), nullable=False),
        sa.Column("fitted_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "prediction_fits",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fitted_at", sa.DateTime, nullable=False),
        sa.Column("now", sa.DateTime, nullable=False),
        sa.Column("fitted", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("repeat_buyers", sa.Integer, nullable=False),
        sa.Column("days_of_history", sa.Integer, nullable=False),
        *(sa.Column(name, sa.Float) for name in ("r", "alpha", "a", "b", "p", "q", "gamma")),
        sa.Column("holdout_days", sa.Integer, nullable=False),
        sa.Column("holdout_predicted", sa.Float),
        sa.Column("holdout_actual", sa.Integer),
    )
    op.create_index("ix_prediction_fits_now", "prediction_fits", ["now"])


def downgrade() -> None:
    op.drop_table("prediction_fits")
    op.drop_table("predictions")
