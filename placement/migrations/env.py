"""Alembic environment for the state store, run programmatically by ``placement.state``.

The caller opens the connection and the transaction and passes them in through
``config.attributes``: ``connection`` (a SQLAlchemy ``Connection`` already inside a transaction) and
``version_table`` (the name of the table that holds the schema revision). Offline (SQL script) mode is
not supported.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("placement migrations run only through placement.state.StateStore.open()")

context.configure(
    connection=connection,
    version_table=config.attributes.get("version_table", "schema_version"),
)
with context.begin_transaction():
    context.run_migrations()
