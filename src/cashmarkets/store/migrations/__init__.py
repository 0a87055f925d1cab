"""Alembic migrations for the platform store (`cashmarkets.store.tables`); run them with
`cashmarkets.store.migrate` or `cashmarkets migrate`. `env.py` is loaded by Alembic, not imported."""
