"""A minimal Switchboard chat client for Python (python-socketio): loads the history, watches
one peer's presence, says hello, and prints everything it receives as JSON lines.

    pip install -r requirements.txt
    SWITCHBOARD_URL=http://localhost:3000 TOKEN=<jwt> PEER=alice python chat.py
"""

import json
import os

import socketio

URL = os.environ.get("SWITCHBOARD_URL", "http://localhost:3000")
PEER = os.environ.get("PEER")

sio = socketio.Client()


def show(event, data):
    print(json.dumps({"event": event, "data": data}), flush=True)


@sio.on("authenticated")
def authenticated(info):
    # Handlers run on the client's own thread; emit with ack (call) from a task instead.
    sio.start_background_task(start, info["userId"])


def start(user_id):
    show("authenticated", {"userId": user_id})
    # Missed direct messages: everything to or from me (a real client keeps its last id).
    history = sio.call("message:sync", {"after": 0}, timeout=10)
    for message in history.get("messages", []):
        show("history", message)
    if not PEER:
        return
    subscribed = sio.call("presence:subscribe", {"userIds": [PEER]}, timeout=10)
    show("presence", subscribed.get("statuses"))
    # A clientMsgId makes a retry after a lost ack safe: the server stores the message once.
    sent = sio.call(
        "message:send",
        {"to": PEER, "text": f"hello from python, {user_id}", "clientMsgId": f"{user_id}-hello"},
        timeout=10,
    )
    show("sent", sent)


# Recoverable events carry their recovery offset as a last string argument (socket.io's
# connection state recovery), so handlers take whatever follows the data.
for name in ["message:received", "friend:online", "friend:offline", "friend:status", "error"]:
    sio.on(name, lambda data, *_offset, name=name: show(name, data))


@sio.event
def connect_error(data):
    show("connect_error", data)


@sio.event
def disconnect(reason=None):
    show("disconnect", {"reason": str(reason)})


if __name__ == "__main__":
    sio.connect(URL, auth={"token": os.environ["TOKEN"]})
    sio.wait()
