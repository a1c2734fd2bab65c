"""The python-socketio client against the built binary in product mode.

A node is started on a loopback port with an HS256 secret; python clients connect with tokens
minted here (stdlib hmac, as a backend would), send `signal`s and `room:emit`s whose data holds
`bytes`, and the receiving python client must get identical `bytes` — over websocket and over
polling. Bytes sent by Node's socket.io-client (tests/js) must reach a python client intact too.

Environment: SWITCHBOARD_BIN (default: <repo>/target/debug/switchboard).
"""

import json
import queue
import subprocess
import time

import pytest
import socketio

from conftest import HERE, bytes_of, token, uid


class Client:
    """A python-socketio client whose every received event goes to a queue."""

    def __init__(self, url, user, transport, **claims):
        self.user = user
        self.events = queue.Queue()
        self.errors = []
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", lambda event, *args: self.events.put((event, args)))
        self.sio.on("connect_error", lambda data=None: self.errors.append(("connect_error", data)))
        self.sio.on("disconnect", lambda *a: self.errors.append(("disconnect", a)))
        self.sio.connect(url, auth={"token": token(user, **claims)}, transports=[transport], wait_timeout=10)
        event, args = self.next("authenticated")
        assert args[0]["userId"] == user
        assert self.sio.transport() == transport

    def next(self, name, timeout=5):
        """The next event named `name` (others before it are dropped): (event, args)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.user}: no {name!r} within {timeout} s; errors {self.errors}")
            try:
                event, args = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event == name:
                return event, args

    def call(self, event, data):
        return self.sio.call(event, data, timeout=5)

    def close(self):
        assert self.errors == [], f"{self.user}: session errors {self.errors}"
        self.sio.disconnect()


def assert_payload(data, n):
    """The payload made by payload(n), with every binary part as identical `bytes`."""
    assert data["n"] == n
    for got, want in [
        (data["blob"], bytes_of(3000, n)),
        (data["parts"][0], bytes_of(1, 200)),
        (data["parts"][2]["deep"], bytes_of(100, n + 1)),
        (data["empty"], b""),
    ]:
        assert isinstance(got, bytes), f"binary arrives as bytes, got {type(got).__name__}: {got!r:.100}"
        assert got == want
    assert data["parts"][1] == "text"


def payload(n):
    return {
        "n": n,
        "blob": bytes_of(3000, n),
        "parts": [bytes_of(1, 200), "text", {"deep": bytes_of(100, n + 1)}],
        "empty": b"",
    }


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_signal_carries_bytes_between_python_clients(node, transport):
    ua, ub = uid("pya"), uid("pyb")
    a = Client(node, ua, transport)
    b = Client(node, ub, transport)
    assert a.call("signal", {"to": ub, "data": payload(1)}) == {"ok": True}
    _, (msg, *_) = b.next("signal")
    assert msg["from"] == ua
    assert_payload(msg["data"], 1)
    assert b.call("signal", {"to": ua, "data": payload(2)}) == {"ok": True}
    _, (msg, *_) = a.next("signal")
    assert msg["from"] == ub
    assert_payload(msg["data"], 2)
    a.close()
    b.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_room_emit_carries_bytes_to_every_member(node, transport):
    room = uid("pyroom")
    members = [Client(node, uid(f"pym{i}"), transport, rooms=[room]) for i in range(2)]
    assert members[0].call("room:emit", {"room": room, "data": payload(3)}) == {"ok": True}
    for m in members:
        # room:msg is recoverable: its recovery offset comes as a last, extra argument.
        _, (msg, *_) = m.next("room:msg")
        assert msg["room"] == room and msg["from"] == members[0].user
        assert_payload(msg["data"], 3)
    for m in members:
        m.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_bytes_from_a_node_client_arrive_intact(node, transport):
    u, sender = uid("pyrecv"), uid("nodesend")
    c = Client(node, u, transport)
    run = subprocess.run(
        ["node", str(HERE / "node_send.mjs"), node, token(sender), u, "5", "2048", "9", "77", "websocket"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, f"node sender failed: {run.stdout}{run.stderr}"
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"ok": True}
    _, (msg, *_) = c.next("signal")
    assert msg["from"] == sender
    assert msg["data"]["text"] == "from node"
    assert isinstance(msg["data"]["buf"], bytes) and msg["data"]["buf"] == bytes_of(2048, 5)
    assert isinstance(msg["data"]["ab"], bytes) and msg["data"]["ab"] == bytes_of(77, 9)
    c.close()
