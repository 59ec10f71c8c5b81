"""The web process's entry point: `gunicorn service.wsgi:app`.

The environment is read here, when the process starts; a configuration error stops it with one line naming
the variable (see `create_app`).
"""

from __future__ import annotations

from service import create_app

app = create_app()
