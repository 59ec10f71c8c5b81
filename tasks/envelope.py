"""A sync task as kombu's Redis transport stores it, so the webhook can queue it inside its own Redis script.

Celery's `send_task` costs the webhook two thirds of its CPU and a round trip of its own, apart from the
dedupe and the status record. The web process instead builds the message here and pushes it in the same Lua
script that dedupes the event and records it (`service.intake`): one atomic round trip, so an event is either
queued and marked seen, or neither.

The message itself is Celery's: its headers come from `app.amqp.as_task_v2` (the protocol-2 builder `send_task`
uses), built once per process, and its body is the JSON of the task's arguments as kombu serializes it. What is
laid out here is kombu's Redis envelope (base64 body, delivery info for the default exchange, a delivery tag),
the layout `Channel.basic_publish` writes with `LPUSH` for a queue of default priority.
`tests/unit/test_envelope.py` holds it against a message `send_task` wrote, so an upgrade of Celery or kombu
that changes the layout fails the tests, not production.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu.serialization import dumps as serialize
from kombu.utils.uuid import uuid

from tasks.celery_app import QUEUE, SYNC_TASK, sync_task_argsrepr


@dataclass(frozen=True)
class QueuedTask:
    task_id: str
    queue: str  # the Redis list the workers consume (a queue of default priority has the queue's own name)
    payload: str  # the broker message, exactly what kombu would LPUSH


# Builds the broker message for one sync task: (event message, accepted_at) -> QueuedTask.
Envelope = Callable[[dict[str, Any], float], QueuedTask]


def sync_task_envelope(celery: Celery) -> Envelope:
    # Celery builds one message here; each message is then that one with its own ids, arguments and summary.
    # (Celery's builder and kombu's serializer registry cost a tenth of the webhook's CPU when run per message.)
    prototype = celery.amqp.as_task_v2(
        "prototype",
        SYNC_TASK,
        args=[{}],
        kwargs={"accepted_at": 0.0},
        reply_to=celery.thread_oid,
        origin=anon_nodename(),
        ignore_result=None,  # what send_task passes when the caller does not choose
        argsrepr="",
        kwargsrepr="{}",
    )
    content_type, content_encoding, _ = serialize(prototype.body, serializer="json")  # type: ignore[no-untyped-call]
    embed = prototype.body[2]  # callbacks, errbacks, chain, chord: none
    properties = {
        **prototype.properties,
        "kwargsrepr": "{}",
        "delivery_mode": 2,  # persistent
        # The default exchange: kombu routes the message to the queue named by the routing key, which is also
        # where it puts the message back if a worker dies holding it.
        "delivery_info": {"exchange": "", "routing_key": QUEUE},
        "priority": 0,
        "body_encoding": "base64",
    }

    def envelope(message: dict[str, Any], accepted_at: float) -> QueuedTask:
        task_id = uuid()
        argsrepr = sync_task_argsrepr(message)
        # kombu's JSON serializer is json.dumps with the default separators; the body test holds them equal.
        body = json.dumps(([message], {"accepted_at": accepted_at}, embed)).encode()
        payload = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": {**prototype.headers, "id": task_id, "root_id": task_id, "argsrepr": argsrepr},
            "properties": {
                **properties,
                "correlation_id": task_id,
                "argsrepr": argsrepr,
                "delivery_tag": uuid(),
            },
        }
        return QueuedTask(task_id=task_id, queue=QUEUE, payload=json.dumps(payload))

    return envelope
