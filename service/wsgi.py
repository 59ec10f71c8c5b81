"""The web process's entry point: `gunicorn service.wsgi:app`.

The environment is read here, when the process starts; a configuration error stops it with one line naming
the variable (exit code 4 makes the gunicorn master stop too, rather than respawn a worker that cannot boot).
"""

from __future__ import annotations

import sys

from service import create_app
from service.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    sys.stderr.write(f"walletsync web: {error}\n")
    sys.stderr.flush()
    raise SystemExit(4) from None
