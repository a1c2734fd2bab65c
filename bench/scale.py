#!/usr/bin/env python3
"""Helpers of bench/scale (not run by CI).

  monitor   sample the nodes' and Redis's CPU ticks and RSS from /proc every 0.25 s, and every
            0.5 s the live nodes' /metrics (authenticated sockets, mailbox depth per actor) and
            Redis's `online_users` count, one JSON line per sample, until a stop file appears
  presence  ask the server API for the presence of the killed node's users
  report    turn a bench/scale results directory into scale.json and the BENCHMARKS.md section
            (bench/scale-results.md, also put into BENCHMARKS.md in place)
"""
import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")
HEADING = "## 100,000 connections and a reconnect storm (bench/scale)"


def proc_sample(pid):
    """(CPU seconds, RSS MiB) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    # utime and stime are fields 14 and 15 of stat (11 and 12 after the command).
    return (int(fields[11]) + int(fields[12])) / TICK, rss / 1024


METRIC = re.compile(r'^(\w+)(?:\{([^}]*)\})?\s+(\S+)')


def node_metrics(addr):
    """Authenticated sockets and mailbox depth per actor of one node, or None."""
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=1.5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {"sockets": 0, "mailbox": {}}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "socket_connections_active":
            out["sockets"] += int(value)
        elif name == "actor_mailbox_depth":
            actor = re.search(r'actor="([^"]*)"', labels)
            if actor:
                out["mailbox"][actor.group(1)] = out["mailbox"].get(actor.group(1), 0) + int(value)
    return out


def redis_int(port, *args):
    """One Redis command answering an integer (raw RESP: no redis-cli process per sample)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.5) as s:
            cmd = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
            s.sendall(cmd.encode())
            answer = s.recv(64).decode()
        return int(answer[1:].split("\r\n")[0]) if answer.startswith(":") else None
    except (OSError, ValueError):
        return None


def monitor(a):
    nodes = [tuple(x.split("=")) for x in a.nodes.split(",")]
    victim_key = f"node:bench-node-1:sockets"
    with open(a.out, "w") as out:
        k = 0
        while not os.path.exists(a.stop):
            began = time.time()
            rec = {"t": round(began, 3), "nodes": {}}
            for i, (addr, pid) in enumerate(nodes, 1):
                s = proc_sample(pid)
                if s:
                    rec["nodes"][i] = {"cpu": s[0], "rss": round(s[1], 2)}
                    if k % 2 == 0:
                        m = node_metrics(addr)
                        if m:
                            rec["nodes"][i].update(m)
            s = proc_sample(a.redis_pid)
            if s:
                rec["redis"] = {"cpu": s[0], "rss": round(s[1], 2)}
                if k % 2 == 0:
                    rec["redis"]["online_users"] = redis_int(a.redis_port, "ZCARD", "online_users")
                    rec["redis"]["victim_sockets"] = redis_int(a.redis_port, "SCARD", victim_key)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            k += 1
            time.sleep(max(0.0, 0.25 - (time.time() - began)))


def share(total, i, k):
    """The load generator's split of `total` over `k` processes (multi.rs `share`)."""
    return total // k + (1 if i < total % k else 0)


def presence(a):
    key = os.environ["SWITCHBOARD_API_KEY"]
    users = [f"{a.tag}-s{s}-u{i}" for s in range(a.processes)
             for i in range(share(a.connections, s, a.processes)) if i % a.nodes == a.victim]
    counts, failed = {}, 0
    for start in range(0, len(users), 100):
        batch = users[start:start + 100]
        req = urllib.request.Request(f"http://{a.node}/api/v1/presence?userIds={','.join(batch)}",
                                     headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                statuses = json.load(r)["statuses"]
        except (OSError, ValueError, KeyError):
            failed += len(batch)
            continue
        for u in batch:
            s = statuses.get(u, "missing")
            counts[s] = counts.get(s, 0) + 1
    with open(a.out, "w") as f:
        json.dump({"checked": len(users), "statuses": counts, "request_failures": failed}, f)
    print(f"presence of {len(users)} users of the killed node: {counts}"
          + (f", {failed} not asked (request failed)" if failed else ""))


# ---- report ----------------------------------------------------------------------------------

def read_kv(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.strip().partition("=")
            if k:
                out[k] = v
    return out


def read_colon(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.strip().partition(":")
            if k:
                out[k] = v
    return out


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, digits=2):
    if v is None:
        return "?"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def at(timeline, t):
    """The last sample taken at or before t (the first one when none)."""
    best = timeline[0] if timeline else None
    for rec in timeline:
        if rec["t"] <= t:
            best = rec
        else:
            break
    return best


def cpu_between(timeline, t0, t1, who):
    """CPU seconds `who` ("redis" or a node number) used between t0 and t1 (nearest samples)."""
    a, b = at(timeline, t0), at(timeline, t1)
    get = (lambda r: (r.get("redis") or {}).get("cpu")) if who == "redis" else \
        (lambda r: (r["nodes"].get(str(who)) or {}).get("cpu"))
    if not a or not b or get(a) is None or get(b) is None:
        return None
    return get(b) - get(a)


def report(a):
    d = a.dir
    p = read_kv(os.path.join(d, "params.txt"))
    marks = {k: int(v) / 1e6 for k, v in read_kv(os.path.join(d, "marks.txt")).items()}
    timeline = []
    if os.path.exists(os.path.join(d, "timeline.jsonl")):
        for line in open(os.path.join(d, "timeline.jsonl")):
            try:
                timeline.append(json.loads(line))
            except ValueError:
                pass
    nodes = int(p.get("nodes", 6))
    hold = load(os.path.join(d, "hold.json")) or {}
    rest = load(os.path.join(d, "hold-rest.json")) or {}
    relay = load(os.path.join(d, "relay.json")) or {}
    traffic = load(os.path.join(d, "storm-traffic.json")) or {}
    pres = load(os.path.join(d, "presence-after.json")) or {}
    r_before = read_colon(os.path.join(d, "redis-before.txt"))
    r_conn = read_colon(os.path.join(d, "redis-connected.txt"))
    r_after = read_colon(os.path.join(d, "redis-after-storm.txt"))
    res = {"params": p}

    # Connect: until every node counted its sockets; RSS per connection per node.
    before, snap = at(timeline, marks.get("connect_start", 0)), at(timeline, marks.get("snapshot", 0))
    per_node = []
    for i in range(1, nodes + 1):
        sockets = None
        mpath = os.path.join(d, f"metrics-connected.{i}.txt")
        if os.path.exists(mpath):
            sockets = sum(int(float(m.group(3))) for m in map(METRIC.match, open(mpath))
                          if m and m.group(1) == "socket_connections_active")
        b = (before or {}).get("nodes", {}).get(str(i), {})
        s = (snap or {}).get("nodes", {}).get(str(i), {})
        kib = None
        if sockets and "rss" in b and "rss" in s:
            kib = (s["rss"] - b["rss"]) * 1024 / sockets
        per_node.append({"node": i, "sockets": sockets, "rss_before_mib": b.get("rss"),
                         "rss_mib": s.get("rss"), "kib_per_connection": kib})
    connected = sum(n["sockets"] or 0 for n in per_node)
    connect_s = marks.get("connected", 0) - marks.get("connect_start", 0)
    node_cpu_connect = sum(cpu_between(timeline, marks.get("connect_start", 0), marks.get("connected", 0), i) or 0
                           for i in range(1, nodes + 1))
    redis_cpu_connect = cpu_between(timeline, marks.get("connect_start", 0), marks.get("connected", 0), "redis")
    # Idle cost of the held sockets: the settle window between "connected" and the snapshot.
    i0, i1 = marks.get("connected", 0), marks.get("snapshot", 0)
    idle = {"seconds": i1 - i0, "redis_cpu_s": cpu_between(timeline, i0, i1, "redis"),
            "node_cpu_s": sum(cpu_between(timeline, i0, i1, i) or 0 for i in range(1, nodes + 1))}
    um = lambda r: int(r["used_memory"]) if "used_memory" in r else None
    res["connect"] = {
        "target": int(p.get("scale_n", 0)), "authenticated": connected, "seconds": connect_s,
        "rate": connected / connect_s if connect_s > 0 else None, "per_node": per_node,
        "loadgen_errors": (hold.get("errors") or {}).get("count", 0) + (rest.get("errors") or {}).get("count", 0),
        "loadgen_established": (hold.get("connections") or {}).get("established", 0)
        + (rest.get("connections") or {}).get("established", 0),
        "node_cpu_s": node_cpu_connect, "redis_cpu_s": redis_cpu_connect,
        "idle": idle,
        "redis": {"before": r_before, "connected": r_conn,
                  "bytes_per_connection": (um(r_conn) - um(r_before)) / connected
                  if connected and um(r_conn) is not None and um(r_before) is not None else None},
    }

    # Broadcasts: every held client expects every one (both hold runs).
    b_expected = sum((r.get("messages") or {}).get("expected_deliveries", 0) for r in (hold, rest))
    b_delivered = sum((r.get("messages") or {}).get("delivered", 0) for r in (hold, rest))
    lat = hold.get("latency_ms") or {}
    b_max = max([(r.get("latency_ms") or {}).get("max", 0) for r in (hold, rest)])
    t0, t1 = marks.get("broadcast_start", 0), marks.get("broadcast_end", 0)
    r_cpu_b = cpu_between(timeline, t0, t1, "redis")
    n_cpu_b = sum(cpu_between(timeline, t0, t1, i) or 0 for i in range(1, nodes + 1))
    status = open(os.path.join(d, "broadcast-status.txt")).read().split() \
        if os.path.exists(os.path.join(d, "broadcast-status.txt")) else []
    res["broadcast"] = {"count": int(p.get("broadcasts", 0)), "http_status": status,
                        "expected": b_expected, "delivered": b_delivered,
                        "lost": b_expected - b_delivered, "latency_ms": lat, "last_delivery_ms": b_max,
                        "redis_cpu_s": r_cpu_b, "node_cpu_s": n_cpu_b}

    # Relay: Redis CPU over the load phase only (after its clients connected).
    rl = relay.get("messages") or {}
    rc = relay.get("connections") or {}
    l0 = marks.get("relay_start", 0) + (rc.get("connect_s") or 0) + 0.3
    l1 = l0 + (rl.get("load_s") or 0)
    r_cpu_r = cpu_between(timeline, l0, l1, "redis")
    n_cpu_r = sum(cpu_between(timeline, l0, l1, i) or 0 for i in range(1, nodes + 1))
    delivered = rl.get("delivered") or 0
    res["relay"] = {"sent": rl.get("sent"), "delivered": delivered, "lost": rl.get("lost"),
                    "rate": rl.get("send_rate_per_s"), "latency_ms": relay.get("latency_ms"),
                    "cross_node": (relay.get("scenario_details") or {}).get("cross_node_sent"),
                    "errors": (relay.get("errors") or {}).get("count"),
                    "loadgen_cpu": (relay.get("loadgen") or {}).get("cpu_avg_pct"),
                    "redis_cpu_s": r_cpu_r, "node_cpu_s": n_cpu_r,
                    "redis_us_per_delivery": r_cpu_r * 1e6 / delivered if r_cpu_r and delivered else None,
                    "nodes_us_per_delivery": n_cpu_r * 1e6 / delivered if n_cpu_r and delivered else None}

    # Storm.
    kill = marks.get("kill", 0)
    settled = marks.get("storm_settled", 0)
    rec = (hold.get("scenario_details") or {}).get("reconnects") or {}
    last = rec.get("last_reauthenticated_at_s")
    online = [(r["t"], r["redis"]["online_users"]) for r in timeline
              if (r.get("redis") or {}).get("online_users") is not None]
    base = [v for t, v in online if t <= kill]
    baseline = base[-1] if base else None
    # Until the traffic's load ends: its users leave after that, which is no presence error.
    load_end = marks.get("storm_start", 0) + float(p.get("storm_secs", 0) or 0)
    window = [(t, v) for t, v in online if kill <= t <= load_end]
    low = min(window, key=lambda x: x[1]) if window else None
    sweep = [(r["t"], r["redis"]["victim_sockets"]) for r in timeline
             if (r.get("redis") or {}).get("victim_sockets") is not None and r["t"] >= kill]
    sweep_start = next((t for t, v in sweep if baseline is not None and v < int(p.get("victim_sockets", 0) or 0)), None)
    sweep_end = next((t for t, v in sweep if v == 0), None)
    peaks = {}
    for r in timeline:
        if not (kill <= r["t"] <= settled):
            continue
        for i, n in r["nodes"].items():
            for actor, depth in (n.get("mailbox") or {}).items():
                key = f"{actor}"
                if depth > peaks.get(key, (0, None))[0]:
                    peaks[key] = (depth, int(i))
    calm = {}
    for r in timeline:
        if not (marks.get("storm_start", 0) <= r["t"] < kill):
            continue
        for i, n in r["nodes"].items():
            for actor, depth in (n.get("mailbox") or {}).items():
                calm[actor] = max(calm.get(actor, 0), depth)
    sc = lambda i: cpu_between(timeline, kill, kill + 15, i)
    tm = traffic.get("messages") or {}
    res["storm"] = {
        "victim_sockets": int(p.get("victim_sockets", 0) or 0),
        "dropped": rec.get("dropped"), "reconnected": rec.get("reconnected"),
        "failed_attempts": rec.get("failed_attempts"),
        "all_reauthenticated_after_s": last - kill if last else None,
        "reconnect_ms": (hold.get("scenario_details") or {}).get("reconnect_ms"),
        "online_users_before_kill": baseline, "online_users_min": low[1] if low else None,
        "online_users_min_at_s": low[0] - kill if low else None,
        "online_window_s": load_end - kill,
        "online_after": r_after.get("online_users"),
        "online_settled_after_traffic_s": marks.get("online_settled", 0) - marks.get("traffic_end", 0),
        "sweep_started_s": sweep_start - kill if sweep_start else None,
        "sweep_done_s": sweep_end - kill if sweep_end else None,
        "presence_after": pres,
        "mailbox_peaks": {k: {"depth": v[0], "node": v[1]} for k, v in sorted(peaks.items())},
        "mailbox_peaks_before_kill": calm,
        "survivor_cpu_s_first_15s": {i: sc(i) for i in range(2, nodes + 1)},
        "redis_cpu_s_first_15s": cpu_between(timeline, kill, kill + 15, "redis"),
        "traffic": {"sent": tm.get("sent"), "delivered": tm.get("delivered"), "lost": tm.get("lost"),
                    "latency_ms": traffic.get("latency_ms"),
                    "errors": (traffic.get("errors") or {}).get("count")},
    }
    with open(os.path.join(d, "scale.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = render(res, os.path.basename(os.path.normpath(d)))
    with open(a.results, "w") as f:
        f.write(md)
    if a.benchmarks and os.path.exists(a.benchmarks):
        # The hand-written reading of the numbers (bench/scale-notes.md) follows the tables, as
        # bench/report.py prints them.
        notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale-notes.md")
        extra = open(notes).read().rstrip() + "\n" if os.path.exists(notes) else ""
        splice(a.benchmarks, md + ("\n" + extra if extra else ""))
    print(md)


def render(res, run):
    p, c, b, r, s = res["params"], res["connect"], res["broadcast"], res["relay"], res["storm"]
    lat = lambda l: ("/".join(fmt((l or {}).get(k)) for k in ("p50", "p99", "p999", "max"))) if l else "?"
    L = [HEADING, ""]
    L.append(f"`bench/scale` ({run}, release build): {p.get('nodes')} cluster nodes sharing one "
             f"redis-server {p.get('redis', '?')} (no persistence) and one PostgreSQL database, "
             f"signed cluster frames, {p.get('haproxies')} HAProxy {p.get('haproxy', '?')} round-robin "
             f"balancers for reconnects; {p.get('pinning') or 'no pinning'}. The load generator is "
             f"`switchboard-loadgen --scenario hold` in {int(p.get('hold_processes', 0)) + 1} processes "
             "(one leaves before the storm so the five survivors stay under 20,000 open files each), "
             "plus one `cluster` process per relay phase.")
    L.append("")
    L.append("**Connect and memory**")
    L.append("")
    L.append("| | value |")
    L.append("|---|---|")
    L.append(f"| sockets authenticated (nodes' `socket_connections_active`) | {fmt(c['authenticated'])} of {fmt(c['target'])} |")
    L.append(f"| connect time (first handshake → every node counts its sockets) | {fmt(c['seconds'], 1)} s ({fmt(c['rate'], 0)}/s) |")
    L.append(f"| CPU while connecting: nodes / Redis | {fmt(c['node_cpu_s'], 1)} s / {fmt(c['redis_cpu_s'], 1)} s |")
    L.append(f"| load-generator connect errors | {fmt(c['loadgen_errors'])} |")
    idle = c["idle"]
    pct = lambda v: fmt(v * 100 / idle["seconds"], 1) if v is not None and idle["seconds"] > 0 else "?"
    L.append(f"| CPU % of one core while held, idle ({fmt(idle['seconds'], 1)} s window): all nodes / Redis | "
             f"{pct(idle['node_cpu_s'])} / {pct(idle['redis_cpu_s'])} |")
    rows = ", ".join(f"n{n['node']} {fmt(n['kib_per_connection'])} ({fmt(n['sockets'])})" for n in c["per_node"])
    L.append(f"| RSS per connection per node, KiB (sockets) | {rows} |")
    L.append(f"| node RSS after connect, MiB | {', '.join(fmt(n['rss_mib'], 1) for n in c['per_node'])} |")
    rc = c["redis"]["connected"]
    mib = lambda v: fmt(int(v) / 1048576, 1) if v else "?"
    L.append(f"| Redis used memory before / connected | {mib(c['redis']['before'].get('used_memory'))} / "
             f"{mib(rc.get('used_memory'))} MiB ({fmt(c['redis']['bytes_per_connection'], 0)} bytes per connection; RSS {mib(rc.get('used_memory_rss'))} MiB) |")
    L.append(f"| Redis keys / pub/sub channels / patterns / clients | {fmt(int(rc.get('dbsize', 0)))} / "
             f"{fmt(int(rc.get('pubsub_channels', 0)))} / {rc.get('pubsub_numpat', '?')} / {rc.get('connected_clients', '?')} |")
    L.append("")
    L.append("**Server-API broadcast to every connection** (`POST /api/v1/emit {to: {all: true}}`, "
             f"{b['count']} of them, each answered {', '.join(b['http_status']) or '?'})")
    L.append("")
    L.append("| | value |")
    L.append("|---|---|")
    L.append(f"| deliveries expected / delivered / lost | {fmt(b['expected'])} / {fmt(b['delivered'])} / {fmt(b['lost'])} |")
    L.append(f"| POST → delivery ms p50 / p99 / p99.9 / max (max = the last delivery of the slowest broadcast) | {lat(b['latency_ms'])} (last: {fmt(b['last_delivery_ms'])}) |")
    per = lambda cpu, n: fmt(cpu * 1e6 / n, 2) if cpu is not None and n else "?"
    L.append(f"| CPU over the broadcast phase: nodes / Redis | {fmt(b['node_cpu_s'], 2)} s ({per(b['node_cpu_s'], b['delivered'])} µs per delivery) / "
             f"{fmt(b['redis_cpu_s'], 2)} s |")
    L.append("")
    L.append(f"**Cross-node relay next to the held connections** (`cluster` scenario, {fmt(int(p.get('relay_n', 0)))} more "
             f"users, every `signal` to a user on another node, {fmt(int(p.get('relay_rate', 0)))} msg/s for {p.get('relay_secs')} s)")
    L.append("")
    L.append("| | value |")
    L.append("|---|---|")
    L.append(f"| sent (achieved rate) / delivered / lost | {fmt(r['sent'])} ({fmt(r['rate'], 0)}/s) / {fmt(r['delivered'])} / {fmt(r['lost'])} |")
    L.append(f"| latency ms p50 / p99 / p99.9 / max | {lat(r['latency_ms'])} |")
    L.append(f"| Redis CPU per delivered message (load phase, /proc) | {fmt(r['redis_us_per_delivery'])} µs ({fmt(r['redis_cpu_s'])} s) |")
    L.append(f"| nodes' CPU per delivered message (all six) | {fmt(r['nodes_us_per_delivery'])} µs ({fmt(r['node_cpu_s'])} s) |")
    L.append(f"| load generator CPU % (its one core) | {fmt(r['loadgen_cpu'], 0)} |")
    L.append("")
    L.append(f"**Reconnect storm**: node 1 SIGKILLed holding {fmt(s['victim_sockets'])} sockets; its clients reconnect "
             "through the balancers (socket.io-client backoff: 1,000 ms × 2^attempt ± 50 %, at most 5,000 ms) "
             f"while {fmt(int(p.get('storm_traffic_n', 0)))} users relay {fmt(int(p.get('storm_traffic_rate', 0)))} msg/s "
             "among the five other nodes.")
    L.append("")
    L.append("| | value |")
    L.append("|---|---|")
    L.append(f"| dropped / reconnected / failed attempts | {fmt(s['dropped'])} / {fmt(s['reconnected'])} / {fmt(s['failed_attempts'])} |")
    L.append(f"| kill → last client authenticated again | {fmt(s['all_reauthenticated_after_s'])} s |")
    L.append(f"| drop → authenticated again ms p50 / p99 / p99.9 / max | {lat(s['reconnect_ms'])} |")
    L.append(f"| dead node swept (its `node:…:sockets` set shrinking → gone) | {fmt(s['sweep_started_s'], 1)} s → {fmt(s['sweep_done_s'], 1)} s after the kill |")
    L.append(f"| `online_users` before the kill / lowest until the traffic's load ended ({fmt(s['online_window_s'], 0)} s; at) / after | {fmt(s['online_users_before_kill'])} / "
             f"{fmt(s['online_users_min'])} ({fmt(s['online_users_min_at_s'], 1)} s) / {s['online_after'] or '?'} "
             f"({fmt(s['online_settled_after_traffic_s'], 1)} s after the traffic's users left) |")
    pa = s["presence_after"]
    L.append(f"| the killed node's users through `GET /api/v1/presence` afterwards | {fmt(pa.get('checked'))} asked: "
             f"{', '.join(f'{k} {fmt(v)}' for k, v in sorted((pa.get('statuses') or {}).items())) or '?'} |")
    peaks = ", ".join(f"{k} {fmt(v['depth'])} (n{v['node']})" for k, v in s["mailbox_peaks"].items() if v["depth"] > 0) or "all 0"
    calm = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(s["mailbox_peaks_before_kill"].items()) if v > 0) or "all 0"
    L.append(f"| survivors' peak mailbox depth, kill → settled (0.5 s polls) | {peaks} |")
    L.append(f"| the same before the kill | {calm} |")
    t = s["traffic"]
    L.append(f"| other nodes' traffic: sent / delivered / lost | {fmt(t['sent'])} / {fmt(t['delivered'])} / {fmt(t['lost'])} |")
    L.append(f"| other nodes' traffic latency ms p50 / p99 / p99.9 / max | {lat(t['latency_ms'])} |")
    cpu = ", ".join(f"n{i} {fmt(v, 1)}" for i, v in s["survivor_cpu_s_first_15s"].items())
    L.append(f"| CPU s in the 15 s after the kill: survivors / Redis | {cpu} / {fmt(s['redis_cpu_s_first_15s'], 1)} |")
    L.append("")
    return "\n".join(L) + "\n"


def splice(path, md):
    """Put the section into BENCHMARKS.md: in place of an earlier one, else before the
    observations (where bench/report.py prints it)."""
    text = open(path).read()
    start = text.find(HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(HEADING))
        end = len(text) if end < 0 else end + 1
        text = text[:start] + md + "\n" + text[end:]
    else:
        at_ = text.find("## Observations")
        at_ = text.find("## How to run") if at_ < 0 else at_
        at_ = len(text) if at_ < 0 else at_
        text = text[:at_] + md + "\n" + text[at_:]
    open(path, "w").write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("monitor")
    m.add_argument("--out", required=True)
    m.add_argument("--stop", required=True)
    m.add_argument("--redis-port", type=int, required=True)
    m.add_argument("--redis-pid", required=True)
    m.add_argument("--nodes", required=True, help="addr=pid,addr=pid,…")
    pr = sub.add_parser("presence")
    pr.add_argument("--node", required=True)
    pr.add_argument("--tag", required=True)
    pr.add_argument("--connections", type=int, required=True)
    pr.add_argument("--processes", type=int, required=True)
    pr.add_argument("--nodes", type=int, required=True)
    pr.add_argument("--victim", type=int, default=0)
    pr.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--dir", required=True)
    r.add_argument("--results", required=True)
    r.add_argument("--benchmarks")
    a = ap.parse_args()
    {"monitor": monitor, "presence": presence, "report": report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
