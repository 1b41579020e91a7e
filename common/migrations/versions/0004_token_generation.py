"""users.token_gen, and user ids that are never reused (SQLite AUTOINCREMENT)

A deleted account's id must not go to the next user who registers: a token
(or a cached id anywhere) would then name someone else. PostgreSQL's sequence
never hands an id out twice; SQLite's plain INTEGER PRIMARY KEY reuses the
highest id after a delete, so on SQLite the table is rebuilt with
AUTOINCREMENT (ids and rows are copied as they are). ``common.db.migrate``
turns SQLite's foreign keys off around migrations, so rebuilding ``users``
does not cascade into the tables that reference it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _token_gen() -> sa.Column:
    return sa.Column("token_gen", sa.Integer(), nullable=False, server_default="0")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "users", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.add_column(_token_gen())
    else:
        op.add_column("users", _token_gen())


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_gen")
