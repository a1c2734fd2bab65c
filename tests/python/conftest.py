"""Shared by the python suites: a product-mode node of the built binary and HS256 tokens
minted as a backend would (stdlib hmac).

Environment: SWITCHBOARD_BIN (default: <repo>/target/debug/switchboard).
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BIN = os.environ.get("SWITCHBOARD_BIN") or str(ROOT / "target" / "debug" / "switchboard")
SECRET = "switchboard-python-tests-secret-0123456789"
_ids = itertools.count(1)


def uid(prefix):
    """A fresh id, so tests sharing the node never share users or rooms (or rate limits)."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def bytes_of(n, seed):
    """Same formula as the JS tests' bytes(): (i * 31 + seed) % 256."""
    return bytes((i * 31 + seed) % 256 for i in range(n))


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(sub, **extra):
    """HS256 JWT for `sub`, valid for an hour."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 3600, **extra}).encode())
    sig = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(sig)}"


@pytest.fixture(scope="module")
def node():
    """One product-mode node on 127.0.0.1:<free port>; its URL. Fails if it dies during the tests."""
    assert os.path.exists(BIN), f"switchboard binary not found at {BIN} (build it or set SWITCHBOARD_BIN)"
    # No stray SWITCHBOARD_* setting of ours may change the node; its scratch dir holds its SQLite file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    with tempfile.TemporaryDirectory(prefix="switchboard-python-") as cwd:
        proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--node-id", "python-node"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        found = queue.Queue()

        def read():
            # Drains the pipe for the node's whole life, so it never blocks on a full pipe.
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("message") == "listening":
                    found.put(rec["addr"])

        threading.Thread(target=read, daemon=True).start()
        try:
            addr = found.get(timeout=15)
        except queue.Empty:
            proc.kill()
            pytest.fail("node did not log `listening`:\n" + "\n".join(lines[-50:]))
        assert re.fullmatch(r"127\.0\.0\.1:\d+", addr), addr
        try:
            yield f"http://{addr}"
        finally:
            alive = proc.poll() is None
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert alive, "the node died during the tests:\n" + "\n".join(lines[-50:])
