// The Switchboard admin page. The API key is kept in this page's memory only (never in storage
// or a URL): it is sent as a bearer header to /admin/* and /api/v1/*, and as the live feed's
// first message. Every value from the server is inserted as text, never as HTML.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  let key = null;
  let live = null;
  let retry = null;

  /** An element with text and attributes. */
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  /** Call the server with the key; resolves with {status, body}. */
  async function call(method, path, body) {
    const headers = { authorization: `Bearer ${key}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    let json = null;
    try {
      json = await res.json();
    } catch {
      /* no JSON body */
    }
    return { status: res.status, body: json };
  }

  function refusal(res) {
    if (res.status === 429) return "Too many wrong keys from this address: wait a second and retry.";
    if (res.status === 401) return "Wrong API key.";
    return (res.body && res.body.error && res.body.error.message) || `HTTP ${res.status}`;
  }

  // --- login ----------------------------------------------------------------------------

  async function login(event) {
    event.preventDefault();
    const error = $("#login-error");
    error.textContent = "";
    key = $("#api-key").value.trim();
    const res = await call("POST", "/admin/login");
    if (res.status !== 200) {
      key = null;
      error.textContent = refusal(res);
      return;
    }
    $("#api-key").value = "";
    $("#login-view").hidden = true;
    $("#tabs").hidden = false;
    $("#logout").hidden = false;
    document.body.dataset.loggedIn = "true";
    show("overview");
    connectLive();
  }

  function logout() {
    key = null;
    clearTimeout(retry);
    if (live) live.close();
    live = null;
    location.reload();
  }

  function show(view) {
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
    for (const v of ["overview", "users", "rooms"]) $(`#${v}-view`).hidden = v !== view;
    document.body.dataset.view = view;
  }

  // --- overview and live feed -------------------------------------------------------------

  function setLiveState(text) {
    $("#live-state").textContent = text;
    document.body.dataset.live = text;
  }

  function connectLive() {
    if (!key) return;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/admin/live`;
    const ws = new WebSocket(url);
    live = ws;
    let refused = false;
    ws.onopen = () => ws.send(JSON.stringify({ key }));
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "ready") setLiveState("live");
      else if (msg.type === "overview") renderOverview(msg);
      else if (msg.type === "error") {
        refused = true;
        setLiveState(`live feed refused: ${msg.message}`);
      }
    };
    ws.onclose = () => {
      if (live !== ws || !key) return;
      if (!refused) setLiveState("live feed lost; reconnecting");
      retry = setTimeout(connectLive, refused ? 5000 : 2000);
    };
  }

  const age = (ms) => `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s`;
  const cls = (good, text) => el("span", { class: good ? "ok" : "bad" }, text);

  function renderOverview(o) {
    document.body.dataset.overviewAt = String(o.atMs);
    const read = o.clusterRead === false ? " (other nodes' snapshots could not be read)" : "";
    $("#overview-summary").textContent = `Answered by ${o.node} · mode: ${o.mode === "cluster" ? "cluster (Redis)" : "single node (in memory)"} · ${o.nodes.length} node(s)${read}`;
    const body = $("#nodes tbody");
    body.replaceChildren(
      ...o.nodes.map((n) => {
        const s = n.stats;
        const cell = (field, value) => el("td", { "data-field": field }, value);
        const name = el("td", { "data-field": "id" }, n.id, n.this ? el("span", { class: "muted" }, " (this node)") : "");
        if (!s) {
          return el("tr", { "data-node": n.id }, name, cell("alive", cls(n.alive, n.alive ? "yes" : "no")), el("td", { colspan: "10", class: "muted" }, "no snapshot"));
        }
        const hooks = el("ul", { class: "plain" }, ...s.hooks.map((h) => el("li", {}, `${h.hook}: `, h.state === "open" ? cls(false, "open") : h.state)));
        const boxes = el("ul", { class: "plain" }, ...s.mailboxes.map((m) => el("li", { "data-actor": m.actor }, `${m.actor}: ${m.depth}`)));
        return el(
          "tr",
          { "data-node": n.id },
          name,
          cell("alive", cls(n.alive, n.alive ? "yes" : "no")),
          cell("status", cls(s.status === "ok", s.status)),
          cell("connections", s.connections),
          cell("sessions", s.sessions ?? "?"),
          cell("redis", s.redis === "down" ? cls(false, "down") : s.redis),
          cell("database", s.database === "down" ? cls(false, "down") : s.database),
          cell("draining", s.draining ? cls(false, "yes") : "no"),
          cell("hooks", hooks),
          cell("webhookOutbox", s.webhookOutbox ?? "off"),
          cell("mailboxes", boxes),
          cell("age", age(s.atMs)),
        );
      }),
    );
  }

  // --- users ------------------------------------------------------------------------------

  /** Look up the user in the form; `note` is shown beside the disconnect button. */
  async function lookupUser(event, note = "") {
    if (event) event.preventDefault();
    const id = $("#user-id").value.trim();
    const out = $("#user-result");
    const res = await call("GET", `/admin/api/users/${encodeURIComponent(id)}`);
    if (res.status !== 200) {
      out.replaceChildren(el("p", { class: "error" }, refusal(res)));
      return;
    }
    const u = res.body;
    const sockets = el(
      "table",
      { id: "user-sockets" },
      el("thead", {}, el("tr", {}, el("th", {}, "Socket id"), el("th", {}, "Node"), el("th", {}, "Device"), el("th", {}, "Rooms"), el("th", {}, "Connected"))),
      el(
        "tbody",
        {},
        ...u.sockets.map((s) =>
          el(
            "tr",
            { "data-socket": s.id },
            el("td", {}, el("code", {}, s.id)),
            el("td", { "data-field": "node" }, s.node),
            el("td", {}, s.device),
            el("td", {}, s.rooms.join(", ")),
            el("td", {}, s.connectedAt ? new Date(s.connectedAt).toISOString() : "?"),
          ),
        ),
      ),
    );
    const button = el("button", { type: "button", id: "disconnect", class: "danger" }, "Disconnect all sockets");
    const result = el("span", { id: "disconnect-result", class: "muted" }, note);
    button.onclick = async () => {
      button.disabled = true;
      const r = await call("POST", `/api/v1/users/${encodeURIComponent(u.user)}/disconnect`);
      result.textContent = r.status === 200 ? ` disconnected (${r.body.disconnected} socket(s) on the answering node; other nodes drop theirs too)` : ` ${refusal(r)}`;
      button.disabled = false;
      // The sockets go asynchronously (other nodes through Redis): look again in a moment.
      setTimeout(() => {
        if ($("#user-id").value.trim() === u.user) lookupUser(null, result.textContent);
      }, 1000);
    };
    out.replaceChildren(
      el("p", { "data-user": u.user }, "User ", el("code", {}, u.user), " · status: ", el("strong", { "data-field": "status" }, u.status), ` · ${u.sockets.length} socket(s) on `, el("span", { "data-field": "nodes" }, u.nodes.join(", ") || "no node")),
      sockets,
      el("p", {}, button, result),
    );
  }

  // --- rooms ------------------------------------------------------------------------------

  async function lookupRoom(event) {
    event.preventDefault();
    const id = $("#room-id").value.trim();
    const out = $("#room-result");
    const res = await call("GET", `/api/v1/rooms/${encodeURIComponent(id)}/members`);
    if (res.status !== 200) {
      out.replaceChildren(el("p", { class: "error" }, refusal(res)));
      return;
    }
    const r = res.body;
    const list = (id, items) => el("ul", { id, class: "plain" }, ...(items.length ? items.map((x) => el("li", {}, x)) : [el("li", { class: "muted" }, "none")]));
    out.replaceChildren(
      el("p", { "data-room": r.room }, "Room ", el("code", {}, r.room), ` · ${r.users.length} user(s) online with `, el("span", { "data-field": "sockets" }, String(r.sockets)), " socket(s)"),
      el("h3", {}, "Online now"),
      list("room-online", r.users),
      el("h3", {}, "Durable members"),
      list("room-members", r.members),
    );
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", login);
    $("#user-form").addEventListener("submit", lookupUser);
    $("#room-form").addEventListener("submit", lookupRoom);
    $("#logout").addEventListener("click", logout);
    for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
  });
})();
