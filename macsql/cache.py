"""The one cache folder: $MACSQL_CACHE, else ~/.cache/macsql.

Everything macsql derives once and reuses lives in a sub-folder of it: schemas and value indexes (schema.py,
values.py), the demo database (demo.py), assembled GGUF files and converted checkpoints (weights.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MACSQL_CACHE") or Path.home() / ".cache" / "macsql")
