"""syncd: keeps a local SQL database in step with the Tengr.ai artworks API."""

from __future__ import annotations

__version__ = "0.1.0"
