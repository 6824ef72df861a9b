"""syncd: keeps a local SQL database in step with the Tengr.ai artworks API."""

from __future__ import annotations

__version__ = "0.1.0"

# The newest migration's revision. A test checks it against Alembic's head, so
# the common case (schema up to date) needs one query and no Alembic import.
SCHEMA_REVISION = "0007"
