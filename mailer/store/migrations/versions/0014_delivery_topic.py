"""deliveries.topic: the campaign's `topic:` when the row was planned, so a frequency cap
with a topic (`{max: 1, per: 7d, topic: promotions}`) counts a customer's earlier mails
of that topic in the same one query per batch as the other caps (issue 21).

Rows planned before this revision get the topic their campaign version was written
with (its stored campaign file; `general` when the file names none): one UPDATE per
version, of which there are few (one per content hash).

Revision ID: 0014
Revises: 0013
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from mailer.config.yamlsrc import load_yaml
from mailer.core.errors import ConfigError

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

DEFAULT_TOPIC = "general"  # mailer.config.campaign's default
log = logging.getLogger("mailer.migrations")


def _topic(definition: object) -> str | None:
    """The topic a stored definition's campaign file names (None: unreadable)."""
    source = definition.get("campaign_source") if isinstance(definition, dict) else None
    if not isinstance(source, str):
        return None
    try:
        data = load_yaml(source, "campaign")
    except ConfigError:
        return None
    topic = data.get("topic", DEFAULT_TOPIC) if isinstance(data, dict) else None
    return topic if isinstance(topic, str) and topic else None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("topic", sa.String(255)))
    conn = op.get_bind()
    json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    versions = sa.table("campaign_versions", sa.column("id", sa.Integer),
                        sa.column("definition", json))
    deliveries = sa.table("deliveries", sa.column("campaign_version_id", sa.Integer),
                          sa.column("topic", sa.String))
    for version_id, definition in conn.execute(sa.select(versions.c.id, versions.c.definition)):
        topic = _topic(definition)
        if topic is None:
            log.warning("campaign version %s: no readable topic; its rows keep none", version_id)
            continue
        conn.execute(deliveries.update()
                     .where(deliveries.c.campaign_version_id == version_id).values(topic=topic))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("topic")
