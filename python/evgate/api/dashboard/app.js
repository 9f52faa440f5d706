// evgate's operator dashboard: plain JavaScript, no dependency, no build step.
//
// The API token is kept in sessionStorage (this tab's session only) and sent as the
// Authorization header on every request; it never appears in a URL. The live stream is read
// with fetch() (EventSource cannot send the header). Everything shown is built with
// textContent, never innerHTML, so no text from a charger or an API client becomes markup.
"use strict";

const TOKEN = "evgate.token";
const SCOPE = "evgate.scope";
const PAGE = 50;
const main = document.getElementById("main");
const state = { stream: null, view: null, retry: 1000 };

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(status) {
  const cls = "badge s-" + String(status).replace(/\s+/g, "-");
  return h("span", { class: cls }, status);
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function isAdmin() {
  return sessionStorage.getItem(SCOPE) === "admin";
}

function setTitle(text) {
  document.title = text + " · evgate";
  return h("h1", {}, text);
}

// Replaces el's children with nodes (arrays flattened; null, undefined and false left out).
function fill(el, ...nodes) {
  el.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function render(...nodes) {
  fill(main, ...nodes);
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message || String(err));
}

function table(caption, columns, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "stack" },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        rows.map((cells) =>
          cells instanceof Node
            ? cells
            : h("tr", {}, cells.map((c, i) => h("td", { "data-label": columns[i] }, c))),
        ),
      ),
    ),
  );
}

function row(cells, columns, attrs) {
  return h("tr", attrs || {}, cells.map((c, i) => h("td", { "data-label": columns[i] }, c)));
}

function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]),
  );
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && (body.detail || body.title || body.errorCode);
    super(detail ? `${status}: ${detail}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// Requests in flight, in <body data-pending>: tests (and screenshots) wait for 0.
let pending = 0;
function pendingBy(n) {
  pending += n;
  document.body.dataset.pending = String(pending);
}

async function api(path, options = {}) {
  pendingBy(1);
  try {
    return await request(path, options);
  } finally {
    pendingBy(-1);
  }
}

async function request(path, options) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { detail: text };
  }
  if (response.status === 401) {
    signOut("Your token was refused; sign in again.");
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// ---------- sign-in ----------

function signInView(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const note = h("p", { id: "signin-note", role: "alert" }, message || "");
  const form = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        sessionStorage.setItem(TOKEN, input.value.trim());
        try {
          const me = await api("/api/v1/token");
          sessionStorage.setItem(SCOPE, me.scope);
          input.value = "";
          const fleet = !location.hash || location.hash === "#/signin";
          start(); // routes: the fleet for an empty hash or #/signin
          // Without a hashchange (which would route again).
          if (fleet) history.replaceState(null, "", "#/fleet");
        } catch (err) {
          sessionStorage.removeItem(TOKEN);
          note.textContent = err.status === 401 ? "This token is unknown or revoked." : err.message;
        }
      },
    },
    h("label", { for: "token" }, "API token", input),
    h("button", { type: "submit" }, "Sign in"),
    note,
  );
  render(
    h(
      "div",
      { class: "signin" },
      setTitle("Sign in"),
      h(
        "p",
        { class: "muted" },
        "A read token shows the fleet; an admin token can also send commands.",
      ),
      form,
    ),
  );
  input.focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(SCOPE);
  stopStream();
  signInView(message);
}

// ---------- the live stream ----------

function setLive(text) {
  document.getElementById("live").textContent = text;
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  setLive("");
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  try {
    const response = await fetch("/api/v1/events/stream", {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) },
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw new Error("stream: HTTP " + response.status);
    setLive("● live");
    state.retry = 1000;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6))
          .join("\n");
        if (data) dispatch(JSON.parse(data));
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  if (state.stream !== controller) return;
  // The stream ended (evgate restarted, the network went away): reconnect, then reload what
  // is shown, since changes may have been missed meanwhile.
  setLive("○ reconnecting");
  const delay = state.retry;
  state.retry = Math.min(state.retry * 2, 30000);
  setTimeout(() => {
    if (state.stream === controller) {
      startStream();
      if (state.view && state.view.resync) state.view.resync();
    }
  }, delay);
}

function dispatch(change) {
  const view = state.view;
  if (!view) return;
  if (change.type === "resync") {
    if (view.resync) view.resync();
  } else if (view.change) {
    view.change(change);
  }
}

// Calls fn at most once per `ms`, the last call winning (summary refreshes on bursts).
function throttle(fn, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
}

// ---------- fleet ----------

const NETWORK = ["available", "temporarily unavailable", "never connected"];
const CONNECTOR = [
  "Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
  "Reserved", "Unavailable", "Faulted",
];

function connectorBadges(connectors) {
  if (!connectors || !connectors.length) return h("span", { class: "muted" }, "no status yet");
  return h(
    "span",
    {},
    connectors.map((c) =>
      h(
        "span",
        { class: "badge s-" + c.status, "data-connector": c.connectorId },
        `${c.connectorId === 0 ? "charger" : "#" + c.connectorId} ${c.status}`,
        c.errorCode && c.errorCode !== "NoError" ? ` (${c.errorCode})` : "",
      ),
    ),
  );
}

function fleetView(params) {
  const filters = {
    q: params.get("q") || "",
    networkStatus: params.get("networkStatus") || "",
    connectorStatus: params.get("connectorStatus") || "",
    installationId: params.get("installationId") || "",
  };
  const cursors = [null]; // the `after` of each page seen, for Previous
  const summary = h("div", { class: "cards", "aria-live": "polite", id: "summary" });
  const listArea = h("div", { id: "chargers" });
  const columns = ["Charger", "Description", "Network", "Connectors"];
  const rows = new Map();

  async function loadSummary() {
    try {
      const s = await api("/api/v1/fleet");
      const card = (n, k, filter) =>
        h(
          "a",
          { class: "card", href: "#/fleet" + query(filter) },
          h("span", { class: "n" }, n),
          h("span", { class: "k" }, k),
        );
      fill(summary,
        card(s.counts.chargers, "chargers", {}),
        ...NETWORK.map((k) => card(s.counts.network[k] || 0, k, { networkStatus: k })),
        ...Object.entries(s.counts.connectors)
          .sort()
          .map(([k, n]) => card(n, "connectors " + k, { connectorStatus: k })),
      );
    } catch (err) {
      fill(summary, errorBox(err));
    }
  }
  // Later than the API's COUNTS_MAX_AGE (1 s) after a change, so that the counts include it.
  const refreshSummary = throttle(loadSummary, 1200);

  async function loadPage() {
    const after = cursors[cursors.length - 1];
    try {
      const page = await api(
        "/api/v1/chargers" + query({ ...filters, after, limit: PAGE }),
      );
      rows.clear();
      const trs = page.data.map((c) => {
        const tr = row(
          [
            h("a", { href: "#/chargers/" + encodeURIComponent(c.id) }, c.id),
            c.description,
            h("span", { class: "net" }, badge(c.networkStatus), " ", h("span", { class: "muted" }, ago(c.networkStatusAt))),
            h("span", { class: "conn" }, connectorBadges(c.connectors)),
          ],
          columns,
          { "data-charger": c.id },
        );
        rows.set(c.id, { tr, charger: c });
        return tr;
      });
      const prev = h("button", {
        type: "button",
        class: "secondary",
        disabled: cursors.length === 1,
        onclick: () => {
          cursors.pop();
          loadPage();
        },
      }, "Previous page");
      const next = h("button", {
        type: "button",
        class: "secondary",
        disabled: !page.nextCursor,
        onclick: () => {
          cursors.push(page.nextCursor);
          loadPage();
        },
      }, "Next page");
      fill(listArea,
        trs.length
          ? table(`Chargers, page ${cursors.length}`, columns, trs)
          : h("p", { class: "muted" }, "No charger matches."),
        h("div", { class: "pager" }, prev, next),
      );
    } catch (err) {
      fill(listArea, errorBox(err));
    }
  }

  const search = h("input", { id: "q", type: "search", value: filters.q, maxlength: 64 });
  const network = h(
    "select",
    { id: "network" },
    h("option", { value: "" }, "any"),
    NETWORK.map((s) => h("option", { value: s, selected: s === filters.networkStatus }, s)),
  );
  const connector = h(
    "select",
    { id: "connector" },
    h("option", { value: "" }, "any"),
    CONNECTOR.map((s) => h("option", { value: s, selected: s === filters.connectorStatus }, s)),
  );
  const installation = h("input", {
    id: "installation",
    type: "number",
    min: 1,
    inputmode: "numeric",
    value: filters.installationId,
  });
  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        location.hash =
          "#/fleet" +
          query({
            q: search.value.trim(),
            networkStatus: network.value,
            connectorStatus: connector.value,
            installationId: installation.value,
          });
      },
    },
    h("label", { for: "q" }, "Search id or description", search),
    h("label", { for: "network" }, "Network status", network),
    h("label", { for: "connector" }, "Connector status", connector),
    h("label", { for: "installation" }, "Installation id", installation),
    h("button", { type: "submit" }, "Filter"),
  );
  render(setTitle("Fleet"), summary, form, listArea);
  loadSummary();
  loadPage();

  return {
    resync() {
      loadSummary();
      loadPage();
    },
    change(change) {
      refreshSummary();
      const shown = rows.get(change.chargerId);
      if (!shown) return;
      const c = shown.charger;
      if (change.type === "status") {
        const others = (c.connectors || []).filter((x) => x.connectorId !== change.connectorId);
        c.connectors = [...others, {
          connectorId: change.connectorId,
          status: change.status,
          errorCode: change.errorCode,
        }].sort((a, b) => a.connectorId - b.connectorId);
        fill(shown.tr.querySelector(".conn"), connectorBadges(c.connectors));
      } else if (change.type === "network") {
        fill(shown.tr.querySelector(".net"), badge(change.networkStatus), " ", h("span", { class: "muted" }, ago(change.at)));
      }
    },
  };
}

// ---------- one charger ----------

const COMMANDS = [
  {
    action: "Reset",
    fields: [{ name: "type", label: "Type", options: ["Soft", "Hard"] }],
  },
  {
    action: "UnlockConnector",
    fields: [{ name: "connectorId", label: "Connector", type: "number", value: 1 }],
  },
  {
    action: "RemoteStartTransaction",
    fields: [
      { name: "idTag", label: "Id tag", required: true },
      { name: "connectorId", label: "Connector (optional)", type: "number" },
    ],
  },
  {
    action: "RemoteStopTransaction",
    fields: [{ name: "transactionId", label: "Transaction id", type: "number", required: true }],
  },
  {
    action: "ChangeConfiguration",
    fields: [
      { name: "key", label: "Key", required: true },
      { name: "value", label: "Value", required: true },
    ],
  },
  {
    action: "GetConfiguration",
    fields: [{ name: "key", label: "Keys (comma-separated, empty for all)", list: true }],
  },
  {
    action: "TriggerMessage",
    fields: [
      {
        name: "requestedMessage",
        label: "Message",
        options: [
          "StatusNotification", "BootNotification", "Heartbeat", "MeterValues",
          "DiagnosticsStatusNotification", "FirmwareStatusNotification",
        ],
      },
      { name: "connectorId", label: "Connector (optional)", type: "number" },
    ],
  },
  {
    action: "ChangeAvailability",
    fields: [
      { name: "connectorId", label: "Connector (0: the charger)", type: "number", value: 0 },
      { name: "type", label: "Type", options: ["Operative", "Inoperative"] },
    ],
  },
  { action: "ClearCache", fields: [] },
];

function commandForm(chargerId, spec, after) {
  const id = (f) => `cmd-${spec.action}-${f.name}`;
  const inputs = spec.fields.map((f) => {
    const input = f.options
      ? h("select", { id: id(f), name: f.name }, f.options.map((o) => h("option", { value: o }, o)))
      : h("input", {
          id: id(f),
          name: f.name,
          type: f.type || "text",
          value: f.value ?? "",
          required: f.required,
          min: f.type === "number" ? 0 : null,
        });
    return { f, input, label: h("label", { for: id(f) }, f.label, input) };
  });
  const answer = h("pre", {
    class: "answer",
    id: `answer-${spec.action}`,
    role: "status",
    "aria-live": "polite",
    "aria-label": `${spec.action} answer`,
  });
  const button = h("button", { type: "submit", class: "action" }, "Send " + spec.action);
  const form = h(
    "form",
    {
      "aria-labelledby": `h-${spec.action}`,
      onsubmit: async (e) => {
        e.preventDefault();
        const payload = {};
        for (const { f, input } of inputs) {
          const v = input.value.trim();
          if (v === "") continue;
          if (f.list) payload[f.name] = v.split(",").map((x) => x.trim()).filter(Boolean);
          else payload[f.name] = f.type === "number" ? Number(v) : v;
        }
        button.disabled = true;
        answer.textContent = "waiting for the charger…";
        try {
          const result = await api(
            `/api/v1/chargers/${encodeURIComponent(chargerId)}/commands/${spec.action}`,
            { method: "POST", body: payload },
          );
          answer.textContent = JSON.stringify(result, null, 1);
        } catch (err) {
          answer.textContent = err.message + (err.body && err.body.errorDescription ? "\n" + err.body.errorDescription : "");
        } finally {
          button.disabled = false;
          if (after) after();
        }
      },
    },
    h("h3", { id: `h-${spec.action}` }, spec.action),
    inputs.map((i) => i.label),
    button,
    answer,
  );
  return form;
}

function chart(buckets) {
  // A tiny SVG chart: average power (W) per bucket and the energy register's last value.
  const power = buckets.filter((b) => b.measurand === "Power.Active.Import" && !b.phase);
  const energy = buckets.filter((b) => b.measurand === "Energy.Active.Import.Register" && !b.phase);
  if (!power.length && !energy.length) {
    return h("p", { class: "muted" }, "No power or energy readings in the last 6 hours.");
  }
  const W = 600, H = 200, pad = 34;
  const t0 = Date.now() - 6 * 3600 * 1000, t1 = Date.now();
  const x = (iso) => pad + ((new Date(iso) - t0) / (t1 - t0)) * (W - 2 * pad);
  const line = (items, value, cls) => {
    if (!items.length) return null;
    const max = Math.max(...items.map(value), 1);
    const min = Math.min(...items.map(value));
    const span = max - min || 1;
    const y = (v) => H - pad - ((v - min) / span) * (H - 2 * pad);
    const pts = items.map((b) => `${x(b.timestamp).toFixed(1)},${y(value(b)).toFixed(1)}`).join(" ");
    return { el: svg("polyline", { class: cls, points: pts }), max, min };
  };
  const p = line(power, (b) => b.avg, "power");
  const e = line(energy, (b) => b.last, "energy");
  const el = svg(
    "svg",
    { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Power and energy, last 6 hours" },
    svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#7a8494" }),
    svg("text", { x: pad, y: H - 10 }, "6 h ago"),
    svg("text", { x: W - pad - 24, y: H - 10 }, "now"),
    p ? [p.el, svg("text", { x: 2, y: pad - 8 }, `${Math.round(p.max)} W`)] : [],
    e ? [e.el, svg("text", { x: W - pad - 90, y: pad - 8 }, `${(e.max / 1000).toFixed(1)} kWh`)] : [],
  );
  return h(
    "figure",
    {},
    el,
    h(
      "figcaption",
      { class: "legend" },
      h("span", {}, "— power, average per 15 min (W)"),
      h("span", {}, "- - energy register (Wh)"),
    ),
  );
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function chargerView(chargerId) {
  const base = `/api/v1/chargers/${encodeURIComponent(chargerId)}`;
  const head = h("div", {});
  const connectors = h("section", { class: "panel", "aria-labelledby": "h-connectors" });
  const messages = h("section", { class: "panel", "aria-labelledby": "h-messages" });
  const txs = h("section", { class: "panel", "aria-labelledby": "h-transactions" });
  const meter = h("section", { class: "panel", "aria-labelledby": "h-meter" });

  async function loadCharger() {
    try {
      const c = await api(base);
      const conn = c.connection;
      const boot = c.boot;
      fill(head,
        h(
          "div",
          { class: "grid2" },
          h(
            "section",
            { class: "panel", "aria-labelledby": "h-connection" },
            h("h2", { id: "h-connection" }, "Connection"),
            facts([
              ["Network status", h("span", { id: "network-status" }, badge(c.networkStatus))],
              ["Since", conn ? `${when(conn.connectedAt)} (${ago(conn.connectedAt)})` : when(c.networkStatusAt)],
              ["From", conn ? conn.remoteAddress : "—"],
              ["Security profile", conn ? String(conn.securityProfile) : `least ${c.securityProfile}`],
              conn && conn.heldBy ? ["Held by", conn.heldBy] : null,
              ["Description", c.description || "—"],
              ["Registration", c.registrationStatus],
              ["Installation", c.installationId ? h("a", { href: `#/installations/${c.installationId}` }, String(c.installationId)) : "—"],
            ]),
          ),
          h(
            "section",
            { class: "panel", "aria-labelledby": "h-boot" },
            h("h2", { id: "h-boot" }, "Boot"),
            boot
              ? facts([
                  ["Vendor", boot.vendor],
                  ["Model", boot.model],
                  ["Firmware", boot.firmwareVersion],
                  ["Serial", boot.chargePointSerialNumber || boot.chargeBoxSerialNumber],
                  ["Meter", boot.meterType],
                  ["Answered", boot.registrationStatus],
                  ["Booted", when(boot.bootedAt)],
                ])
              : h("p", { class: "muted" }, "No BootNotification yet."),
          ),
        ),
      );
    } catch (err) {
      fill(head, errorBox(err));
    }
  }

  async function loadConnectors() {
    const columns = ["Connector", "Status", "Error", "Info", "Since"];
    try {
      const list = await api(base + "/connectors");
      fill(connectors,
        h("h2", { id: "h-connectors" }, "Connectors"),
        list.length
          ? table(
              null,
              columns,
              list.map((c) =>
                row(
                  [
                    c.connectorId === 0 ? "0 (charger)" : String(c.connectorId),
                    badge(c.status),
                    c.errorCode,
                    [c.info, c.vendorErrorCode].filter(Boolean).join(" "),
                    when(c.statusAt),
                  ],
                  columns,
                  { "data-connector": c.connectorId },
                ),
              ),
            )
          : h("p", { class: "muted" }, "No StatusNotification yet."),
      );
    } catch (err) {
      fill(connectors, errorBox(err));
    }
  }

  async function loadMessages() {
    try {
      const log = await api(base + "/messages");
      const items = log.messages.slice().reverse();
      fill(messages,
        h("h2", { id: "h-messages" }, "Recent OCPP messages"),
        log.heldBy
          ? h("p", { class: "muted" }, `Held by evgate process ${log.heldBy}: its log is there.`)
          : null,
        items.length
          ? h(
              "ol",
              { class: "frames", "aria-label": "newest first" },
              items.map((f) =>
                h(
                  "li",
                  {},
                  h("time", { datetime: f.at }, new Date(f.at).toLocaleTimeString()),
                  h("span", { class: "dir-" + f.direction, title: f.direction === "in" ? "from the charger" : "to the charger" }, f.direction === "in" ? "→ in" : "← out"),
                  h("code", {}, f.text, f.size > f.text.length ? ` … (${f.size} bytes)` : ""),
                ),
              ),
            )
          : h("p", { class: "muted" }, "No message since this evgate process started."),
      );
    } catch (err) {
      fill(messages, errorBox(err));
    }
  }

  async function loadTransactions() {
    const columns = ["Id", "Connector", "Id tag", "Started", "Stopped", "Energy (Wh)"];
    try {
      const page = await api("/api/v1/transactions" + query({ chargerId, limit: 10 }));
      fill(txs,
        h("h2", { id: "h-transactions" }, "Transactions"),
        page.data.length
          ? table(null, columns, page.data.map((t) => txRow(t, columns)))
          : h("p", { class: "muted" }, "No transaction yet."),
        h("a", { href: "#/transactions" + query({ chargerId }) }, "All transactions of this charger"),
      );
    } catch (err) {
      fill(txs, errorBox(err));
    }
  }

  async function loadMeter() {
    try {
      const from = new Date(Date.now() - 6 * 3600 * 1000).toISOString();
      const page = await api(base + "/meter-values" + query({ resolution: "15m", from, limit: 1000 }));
      fill(meter, h("h2", { id: "h-meter" }, "Meter, last 6 hours"), chart(page.data));
    } catch (err) {
      fill(meter, errorBox(err));
    }
  }

  const refreshMessages = throttle(loadMessages, 500);
  const commands = isAdmin()
    ? h(
        "section",
        { class: "panel", "aria-labelledby": "h-commands" },
        h("h2", { id: "h-commands" }, "Commands"),
        h("div", { class: "commands" }, COMMANDS.map((spec) => commandForm(chargerId, spec, refreshMessages))),
      )
    : null;

  render(
    h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
    setTitle("Charger " + chargerId),
    head,
    connectors,
    commands,
    messages,
    meter,
    txs,
  );
  const all = () => {
    loadCharger();
    loadConnectors();
    loadMessages();
    loadTransactions();
    loadMeter();
  };
  all();
  return {
    resync: all,
    change(change) {
      if (change.chargerId !== chargerId) return;
      if (change.type === "status") loadConnectors();
      else loadCharger();
      refreshMessages();
    },
  };
}

// ---------- transactions ----------

function txRow(t, columns) {
  return row(
    [
      h("a", { href: `#/transactions/${t.id}` }, String(t.id)),
      String(t.connectorId),
      t.idTag,
      when(t.startedAt),
      t.active ? badge("Charging") : when(t.stoppedAt),
      t.energyWh == null ? "—" : String(Math.round(t.energyWh)),
    ],
    columns,
  );
}

function transactionsView(params) {
  const filters = {
    chargerId: params.get("chargerId") || "",
    idTag: params.get("idTag") || "",
    active: params.get("active") || "",
  };
  const cursors = [null];
  const list = h("div", {});
  const columns = ["Id", "Charger", "Connector", "Id tag", "Started", "Stopped", "Energy (Wh)"];

  async function load() {
    try {
      const page = await api(
        "/api/v1/transactions" + query({ ...filters, after: cursors[cursors.length - 1], limit: PAGE }),
      );
      const rows = page.data.map((t) => {
        const tr = txRow(t, columns.filter((c) => c !== "Charger"));
        const cell = h("td", { "data-label": "Charger" }, h("a", { href: "#/chargers/" + encodeURIComponent(t.chargerId) }, t.chargerId));
        tr.insertBefore(cell, tr.children[1]);
        return tr;
      });
      fill(list,
        rows.length ? table(`Transactions, newest first, page ${cursors.length}`, columns, rows) : h("p", { class: "muted" }, "No transaction matches."),
        h(
          "div",
          { class: "pager" },
          h("button", { type: "button", class: "secondary", disabled: cursors.length === 1, onclick: () => { cursors.pop(); load(); } }, "Previous page"),
          h("button", { type: "button", class: "secondary", disabled: !page.nextCursor, onclick: () => { cursors.push(page.nextCursor); load(); } }, "Next page"),
        ),
      );
    } catch (err) {
      fill(list, errorBox(err));
    }
  }
  const charger = h("input", { id: "tx-charger", value: filters.chargerId });
  const idTag = h("input", { id: "tx-idtag", value: filters.idTag });
  const active = h(
    "select",
    { id: "tx-active" },
    h("option", { value: "" }, "all"),
    h("option", { value: "true", selected: filters.active === "true" }, "open"),
    h("option", { value: "false", selected: filters.active === "false" }, "closed"),
  );
  render(
    setTitle("Transactions"),
    h(
      "form",
      {
        class: "filters",
        role: "search",
        onsubmit: (e) => {
          e.preventDefault();
          location.hash = "#/transactions" + query({ chargerId: charger.value.trim(), idTag: idTag.value.trim(), active: active.value });
        },
      },
      h("label", { for: "tx-charger" }, "Charger", charger),
      h("label", { for: "tx-idtag" }, "Id tag", idTag),
      h("label", { for: "tx-active" }, "State", active),
      h("button", { type: "submit" }, "Filter"),
    ),
    list,
  );
  load();
  return { resync: load };
}

function transactionView(id) {
  const box = h("div", {});
  async function load() {
    try {
      const t = await api(`/api/v1/transactions/${encodeURIComponent(id)}`);
      fill(box,
        h(
          "section",
          { class: "panel" },
          facts([
            ["Charger", h("a", { href: "#/chargers/" + encodeURIComponent(t.chargerId) }, t.chargerId)],
            ["Connector", String(t.connectorId)],
            ["State", t.active ? badge("Charging") : "closed"],
            ["Id tag", `${t.idTag} (${t.idTagStatus})`],
            ["Parent id tag", t.parentIdTag],
            ["Reservation", t.reservationId == null ? null : String(t.reservationId)],
            ["Started", when(t.startedAt)],
            ["Meter start (Wh)", String(t.meterStart)],
            ["Stopped", when(t.stoppedAt)],
            ["Meter stop (Wh)", t.meterStop == null ? null : String(t.meterStop)],
            ["Stop reason", t.stopReason],
            ["Stopped by id tag", t.stopIdTag],
            ["Energy (Wh)", t.energyWh == null ? null : String(Math.round(t.energyWh))],
          ]),
        ),
        isAdmin() && t.active
          ? commandForm(t.chargerId, {
              action: "RemoteStopTransaction",
              fields: [{ name: "transactionId", label: "Transaction id", type: "number", value: t.id }],
            })
          : null,
      );
    } catch (err) {
      fill(box, errorBox(err));
    }
  }
  render(h("p", {}, h("a", { href: "#/transactions" }, "← Transactions")), setTitle("Transaction " + id), box);
  load();
  return { resync: load };
}

// ---------- notifications ----------

function notificationsView() {
  const box = h("div", {});
  const BASE = "/public-api/notifications/v2.0";
  async function load() {
    try {
      const page = await api(BASE + "?per_page=100");
      const sections = await Promise.all(
        page.data.map(async (s) => {
          const [failed, counts] = await Promise.all([
            api(`${BASE}/${s.id}/failed-deliveries?limit=20`),
            api(`${BASE}/${s.id}/delivery-counts`),
          ]);
          const result = h("p", { role: "status", "aria-live": "polite" });
          const columns = ["Event", "Notification", "Charger", "Attempts", "Last error", "Made"];
          return h(
            "section",
            { class: "panel", "aria-labelledby": `h-sub-${s.id}` },
            h("h2", { id: `h-sub-${s.id}` }, `Subscription ${s.id} `, badge(s.enabled ? "enabled" : "disabled")),
            facts([
              ["Via", s.via],
              ["To", s.webhook ? s.webhook.url || s.webhook.callbackUrl : s.kafka ? `${s.kafka.bootstrapServers || ""} ${s.kafka.topic || ""}` : null],
              ["Notifications", s.notifications.join(", ")],
              s.disabledReason ? ["Disabled because", s.disabledReason] : null,
              s.notEmitted && s.notEmitted.length ? ["Never emitted by evgate", s.notEmitted.join(", ")] : null,
              ["Deliveries waiting", h("span", { class: "waiting" }, String(counts.waiting))],
              ["Deliveries failed", h("span", { class: "failed" }, String(counts.failed))],
            ]),
            h("h3", {}, `Failed deliveries${counts.failed > failed.data.length ? `, the first ${failed.data.length}` : ""}`),
            failed.data.length
              ? table(null, columns, failed.data.map((d) => row([String(d.eventId), d.notification, d.chargerId, String(d.attempts), d.lastError || "—", when(d.createdAt)], columns)))
              : h("p", { class: "muted" }, "None: every delivery is done or still being retried."),
            isAdmin() && failed.data.length
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "action",
                    onclick: async () => {
                      try {
                        const r = await api(`/public-api/actions/notifications/v1.0/${s.id}/resend`, { method: "POST", body: {} });
                        result.textContent = `${r.data.deliveries} deliveries queued again.`;
                        setTimeout(load, 1500);
                      } catch (err) {
                        result.textContent = err.message;
                      }
                    },
                  },
                  "Resend failed deliveries",
                )
              : null,
            result,
          );
        }),
      );
      fill(box,
        ...(sections.length ? sections : [h("p", { class: "muted" }, "No subscription.")]),
      );
    } catch (err) {
      fill(box, errorBox(err));
    }
  }
  render(setTitle("Notifications"), box);
  load();
  return { resync: load };
}

// ---------- installations ----------

function installationsView() {
  const box = h("div", {});
  const columns = ["Id", "Name", "Authorization", "Offline charging", "Changed"];
  async function load() {
    try {
      const page = await api("/api/v1/installations?limit=100");
      fill(box,
        page.data.length
          ? table(
              null,
              columns,
              page.data.map((i) =>
                row(
                  [
                    h("a", { href: `#/installations/${i.id}` }, String(i.id)),
                    i.name,
                    i.authorizationMode,
                    i.allowChargingWhenOffline ? "allowed" : "not allowed",
                    when(i.updatedAt),
                  ],
                  columns,
                ),
              ),
            )
          : h("p", { class: "muted" }, "No installation."),
      );
    } catch (err) {
      fill(box, errorBox(err));
    }
  }
  render(setTitle("Installations"), box);
  load();
  return { resync: load };
}

function installationView(id) {
  const box = h("div", {});
  async function load() {
    try {
      const [i, members] = await Promise.all([
        api(`/api/v1/installations/${encodeURIComponent(id)}`),
        api(`/api/v1/installations/${encodeURIComponent(id)}/chargers?limit=100`),
      ]);
      const columns = ["Charger", "Offline configuration", "Answered"];
      fill(box,
        h(
          "section",
          { class: "panel" },
          facts([
            ["Name", i.name],
            ["Authorization", i.authorizationMode],
            ["Offline charging", i.allowChargingWhenOffline ? "allowed" : "not allowed"],
            ["Webhook", i.webhook ? i.webhook.authenticationUrl : null],
            ["On failure", i.webhook ? i.webhook.onFailure : null],
          ]),
        ),
        h("h2", {}, "Chargers"),
        members.data.length
          ? table(
              null,
              columns,
              members.data.map((m) =>
                row(
                  [
                    h("a", { href: "#/chargers/" + encodeURIComponent(m.chargerId) }, m.chargerId),
                    m.offlineConfig ? m.offlineConfig.state : "—",
                    m.offlineConfig ? when(m.offlineConfig.updatedAt) : "—",
                  ],
                  columns,
                ),
              ),
            )
          : h("p", { class: "muted" }, "No charger."),
        h("a", { href: "#/fleet" + query({ installationId: id }) }, "These chargers in the fleet list"),
      );
    } catch (err) {
      fill(box, errorBox(err));
    }
  }
  render(h("p", {}, h("a", { href: "#/installations" }, "← Installations")), setTitle("Installation " + id), box);
  load();
  return { resync: load };
}

// ---------- routing ----------

function route() {
  if (!sessionStorage.getItem(TOKEN)) {
    state.view = null;
    signInView();
    return;
  }
  const [path, q] = (location.hash.slice(1) || "/fleet").split("?");
  const params = new URLSearchParams(q || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#/" + parts[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (parts[0] === "chargers" && parts[1]) state.view = chargerView(parts[1]);
  else if (parts[0] === "transactions" && parts[1]) state.view = transactionView(parts[1]);
  else if (parts[0] === "transactions") state.view = transactionsView(params);
  else if (parts[0] === "notifications") state.view = notificationsView();
  else if (parts[0] === "installations" && parts[1]) state.view = installationView(parts[1]);
  else if (parts[0] === "installations") state.view = installationsView();
  else state.view = fleetView(params);
  main.focus({ preventScroll: true });
}

function start() {
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent = isAdmin() ? "admin" : "read only";
  route();
  startStream();
}

window.addEventListener("hashchange", route);
document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
if (sessionStorage.getItem(TOKEN)) start();
else signInView();
