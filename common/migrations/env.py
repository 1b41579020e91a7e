"""Alembic environment: runs on the connection handed over by ``common.db.migrate``."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via common.db.migrate
    raise RuntimeError("run migrations through common.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=None,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
