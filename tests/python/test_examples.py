"""The client examples in examples/clients, run as a user would run them.

The python example (chat.py) and the Node example (chat.mjs) talk to each other through a node:
the first to start stores a hello for the other, who finds it in its history, watches the first
one's presence and says hello back live.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, token, uid

EXAMPLES = ROOT / "examples" / "clients"


class Example:
    """One example process; its stdout JSON lines go to a queue."""

    def __init__(self, argv, url, user, peer):
        env = {**os.environ, "SWITCHBOARD_URL": url, "TOKEN": token(user), "PEER": peer}
        self.proc = subprocess.Popen(
            argv, cwd=EXAMPLES, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines = []
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def next(self, event, timeout=15):
        """The data of the next `event` line; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                rec = self.events.get(timeout=max(left, 0))
            except queue.Empty:
                pytest.fail(f"no {event} within {timeout} s; output:\n" + "\n".join(self.lines[-40:]))
            if rec.get("event") == event:
                return rec["data"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def examples():
    started = []
    yield lambda *args: started.append(Example(*args)) or started[-1]
    for ex in started:
        ex.stop()


def test_python_and_node_examples_talk(node, examples):
    assert (EXAMPLES / "node_modules" / "socket.io-client").is_dir(), "run npm ci in examples/clients"
    dave, erin = uid("dave"), uid("erin")
    py = examples([sys.executable, "chat.py"], node, dave, erin)
    assert py.next("authenticated") == {"userId": dave}
    assert py.next("presence") == {erin: "offline"}
    sent = py.next("sent")
    assert sent["ok"] is True, sent

    js = examples(["node", "chat.mjs"], node, erin, dave)
    assert js.next("authenticated") == {"userId": erin}
    history = js.next("history")
    assert (history["from"], history["to"], history["text"]) == (dave, erin, f"hello from python, {dave}")
    assert history["messageId"] == sent["messageId"]
    assert js.next("presence") == {dave: "online"}

    assert py.next("friend:online") == {"userId": erin}
    got = py.next("message:received")
    assert (got["from"], got["to"], got["text"]) == (erin, dave, f"hello from node, {erin}")
