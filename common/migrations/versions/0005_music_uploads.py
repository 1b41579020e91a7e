"""music_uploads: uploaded music kept in the database, readable by every node

An upload used to live only in the accepting node's ``DISCO_UPLOAD_DIR``; a
room hosted on another node could not play it. The bytes (at most
``DISCO_MAX_UPLOAD_BYTES``) now live here; each node keeps a local copy in
its upload folder as a cache.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "music_uploads",
        sa.Column("source_id", sa.String(length=32), primary_key=True),
        sa.Column("ext", sa.String(length=8), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(),
                  sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("music_uploads")
