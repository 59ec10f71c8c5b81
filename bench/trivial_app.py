"""The baseline for the ingest benchmark: a minimal Flask app with one POST route answering a small JSON.

Served by the same gunicorn configuration as the service (`gunicorn bench.trivial_app:app` from the repository
root reads ./gunicorn.conf.py too), so the ratio of the two isolates what the webhook's own work costs.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)


@app.post("/trivial")
def trivial() -> ResponseReturnValue:
    request.get_data(cache=False)  # read the body, as the webhook does
    return jsonify(status="ok"), 200
