"""Conversation writes survive `kill -9`: a child process stores exchanges as a response does
(`save_exchange`: messages and response in one transaction) and prints each id once its write has
returned; it is SIGKILLed mid-stream, and the database read afterwards holds every acknowledged
response with both its messages, and no response without them (nothing half-written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmasos.data import responses as resp
from llmasos.data.app_data import app_data

WRITER = """
import sys
from llmasos.data import responses as resp
from llmasos.data.app_data import app_data
from llmasos.data.conversations import create_conversation

data = app_data("name:durable")
conversation = create_conversation(data)["id"]
print("conversation", conversation, flush=True)
n = 0
while True:
    rid = resp.new_response_id()
    place = resp.Place(conversation) if n % 2 else resp.Place(None)
    body = {"id": rid, "object": "response", "output": []}
    asked = [("user", f"question {n} " * 50)]
    resp.save_exchange(data, place, rid, asked, f"answer {n}", resp.new_message_id(), body, {})
    print("acked", rid, flush=True)
    n += 1
"""


def test_every_acknowledged_exchange_survives_sigkill_and_none_is_half_written(llmasos_home: Path) -> None:
    env = {**os.environ, "LLMASOS_HOME": str(llmasos_home), "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    acked: list[str] = []
    deadline = time.monotonic() + 60
    while len(acked) < 40 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("acked"):
            acked.append(line.split()[1])
    os.kill(child.pid, signal.SIGKILL)
    # Lines written before the kill but not yet read were acknowledged too.
    acked += [line.split()[1] for line in child.stdout.read().splitlines() if line.startswith("acked")]
    child.wait()
    assert len(acked) >= 40
    data = app_data("name:durable")
    for rid in acked:
        assert resp.get_response(data, rid)["id"] == rid
    stored = data.db.execute(
        "SELECT r.id, (SELECT count(*) FROM conversation_items i WHERE i.response_id = r.id) FROM responses r"
    )
    assert {row[0] for row in stored} >= set(acked)
    assert all(row[1] == 2 for row in stored), "a response without both of its messages"
    items = data.db.execute("SELECT response_id, count(*) FROM conversation_items GROUP BY response_id")
    assert all(count == 2 for _, count in items), json.dumps([tuple(r) for r in items][:5])
