// The console: renders each view from the JSON API and follows runs over server-sent events.
"use strict";

const main = document.getElementById("main");
const problemBox = document.getElementById("problem");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showProblem(message) {
  problemBox.textContent = message;
  problemBox.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin", ...options,
    headers: { "X-Requested-With": "tether-console", "Content-Type": "application/json",
               ...(options.headers || {}) },
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || { code: "http", message: response.statusText };
    if (response.status === 401) location.assign("/console/login");
    throw new Error(`${error.code}: ${error.message}`);
  }
  return body;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-";
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}` }, status);
}

function json(value) {
  return el("pre", {}, JSON.stringify(value, null, 2));
}

// -- runs list ------------------------------------------------------------------------------

async function runsView() {
  const params = new URLSearchParams(location.search);
  const agents = (await api("/v1/agents").catch(() => ({ agents: [] }))).agents;
  const start = el("form", { class: "inline", "aria-label": "Start a run" },
    el("label", {}, "Agent to run", el("select", { name: "agent", required: "", "aria-label": "Agent to run" },
      agents.map((a) => el("option", { value: a.name }, a.name)))),
    el("label", {}, "Input (JSON)", el("input", { name: "input", value: "{}", size: "40" })),
    el("button", { type: "submit" }, "Start run"));
  start.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const input = JSON.parse(start.elements.input.value || "{}");
      const run = await api("/v1/runs", { method: "POST",
        body: JSON.stringify({ agent: start.elements.agent.value, input }) });
      location.assign(`/console/runs/${encodeURIComponent(run.run_id)}`);
    } catch (error) { showProblem(String(error.message || error)); }
  });
  const statuses = ["", "pending", "running", "waiting", "completed", "failed", "cancelled",
                    "needs_attention"];
  const filters = el("form", { class: "filters", method: "get", "aria-label": "Filter runs" },
    el("label", {}, "Status", el("select", { name: "status" },
      statuses.map((s) => el("option", s === (params.get("status") || "") ? { value: s, selected: "" } : { value: s }, s || "any")))),
    el("label", {}, "Agent", el("input", { name: "agent", value: params.get("agent") || "" })),
    el("button", { type: "submit" }, "Filter"));
  const table = el("div", { "aria-live": "polite" });
  main.append(agents.length ? start : el("p", { class: "empty" }, "This server serves no agents: start it with --agent MODULE:AGENT."), filters, table);

  async function refresh() {
    const query = new URLSearchParams();
    for (const key of ["status", "agent"]) if (params.get(key)) query.set(key, params.get(key));
    try {
      const page = await api(`/v1/runs?${query}`);
      showProblem("");
      table.replaceChildren(page.runs.length ? el("table", {},
        el("thead", {}, el("tr", {}, ["Run", "Agent", "Status", "Principal", "Created"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, page.runs.map((run) => el("tr", {},
          el("td", {}, el("a", { href: `/console/runs/${encodeURIComponent(run.run_id)}` }, run.run_id)),
          el("td", {}, run.agent), el("td", {}, statusBadge(run.status)),
          el("td", {}, run.principal), el("td", {}, when(run.created_at_ms))))))
        : el("p", { class: "empty" }, "No runs match. Start one above, or change the filters."));
    } catch (error) { showProblem(String(error.message || error)); }
  }
  await refresh();
  setInterval(refresh, 2000);
}

// -- one run: live timeline ------------------------------------------------------------------

function recordItem(record, extra) {
  const usage = record.detail && record.detail.usage;
  const duration = record.finished_at_ms ? `${record.finished_at_ms - record.started_at_ms} ms` : "in flight";
  const meta = [`#${record.seq}`, record.kind, `state ${record.state}`,
                `attempts ${record.attempts}`, duration];
  if (usage) {
    meta.push(`tokens ${usage.input_tokens} in / ${usage.output_tokens} out`);
    meta.push(usage.cost_usd === undefined ? "cost unknown" : `$${usage.cost_usd.toFixed(6)}`);
  }
  return el("li", { class: `state-${record.state}`, "data-seq": String(record.seq) },
    el("strong", {}, record.name), " ", el("span", { class: "meta" }, meta.join(" · ")),
    extra && extra.args ? el("div", {}, "arguments", json(extra.args)) : null,
    record.value !== null ? el("div", {}, record.state === "error" ? "error" : "result", json(record.value)) : null);
}

async function runView() {
  const runId = main.dataset.runId;
  const header = el("p", { "aria-live": "polite" }, "Loading…");
  const actions = el("div", { class: "inline" });
  const timeline = el("ol", { class: "timeline", "aria-label": "Timeline" });
  const inFlight = el("ol", { class: "timeline", "aria-label": "In flight" });
  const streaming = el("div", { class: "streaming", "aria-live": "off", hidden: "" });
  main.append(header, actions, el("h2", {}, "Timeline"), timeline, inFlight, streaming);
  const args = {};
  let ended = false;
  const cancel = el("button", { type: "button", onclick: async () => {
    try { await api(`/v1/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST", body: "{}" }); }
    catch (error) { showProblem(String(error.message || error)); }
  } }, "Cancel run");
  actions.append(cancel);

  const source = new EventSource(`/v1/runs/${encodeURIComponent(runId)}/events`);
  source.addEventListener("record", (event) => {
    const record = JSON.parse(event.data);
    timeline.append(recordItem(record, { args: args[record.seq] }));
    if (record.kind === "llm") { streaming.textContent = ""; streaming.hidden = true; }
  });
  source.addEventListener("run", (event) => {
    const state = JSON.parse(event.data);
    const run = state.run;
    const parts = [statusBadge(run.status), ` · agent ${run.agent} · principal ${run.principal} · started ${when(run.created_at_ms)}`];
    if (run.status === "waiting") parts.push(` · waiting for ${run.waiting_for || "a timer"}`);
    if (run.error) parts.push(el("div", { class: "error" }, `${run.error.code}: ${run.error.message}`));
    if (run.status === "completed") parts.push(el("div", {}, "result", json(run.result)));
    header.replaceChildren(...parts);
    header.dataset.status = run.status;
    cancel.hidden = ["completed", "failed", "cancelled"].includes(run.status);
    inFlight.replaceChildren(...state.in_flight.map((r) => {
      const item = recordItem(r, { args: args[r.seq] }); item.classList.add("in-flight"); return item;
    }));
  });
  source.addEventListener("live", (event) => {
    const live = JSON.parse(event.data);
    if (live.type === "llm.delta") { streaming.hidden = false; streaming.textContent += live.data.text; }
    if (live.type === "tool.started" && live.data.args) args[live.data.seq] = live.data.args;
  });
  source.addEventListener("end", () => { ended = true; source.close(); });
  source.onerror = () => { if (!ended && source.readyState === EventSource.CLOSED) showProblem("The event stream closed; reload to reconnect."); };
}

// -- approvals -------------------------------------------------------------------------------

async function approvalsView() {
  const list = el("div", { "aria-live": "polite" });
  main.append(list);
  async function refresh() {
    try {
      const { approvals } = await api("/v1/approvals?status=pending");
      showProblem("");
      if (!approvals.length) { list.replaceChildren(el("p", { class: "empty" }, "Nothing waits for a decision.")); return; }
      list.replaceChildren(...approvals.map((a) => {
        const reason = el("input", { name: "reason", required: "", "aria-label": `Reason for ${a.approval_id}` });
        const decide = (approve) => async () => {
          if (!reason.value.trim()) { reason.focus(); showProblem("Give a reason: it goes on the record."); return; }
          try {
            await api(`/v1/approvals/${encodeURIComponent(a.approval_id)}/decision`,
                      { method: "POST", body: JSON.stringify({ approve, reason: reason.value }) });
            await refresh();
          } catch (error) { showProblem(String(error.message || error)); }
        };
        return el("section", { class: "approval", "data-approval": a.approval_id },
          el("h2", {}, `${a.tool} for run `, el("a", { href: `/console/runs/${encodeURIComponent(a.run_id)}` }, a.run_id)),
          el("p", { class: "meta" }, `requested by ${a.principal} via ${a.agent} at ${when(a.requested_at_ms)}, expires ${when(a.expires_at_ms)}; held by ${a.policies.join(", ")}`),
          el("div", {}, "arguments", json(a.args)),
          a.message && a.message.text ? el("p", {}, "The model said: ", a.message.text) : null,
          el("div", { class: "inline" }, el("label", {}, "Reason", reason),
            el("button", { type: "button", onclick: decide(true) }, "Approve"),
            el("button", { type: "button", onclick: decide(false) }, "Deny")));
      }));
    } catch (error) { showProblem(String(error.message || error)); }
  }
  await refresh();
  setInterval(() => { if (!main.contains(document.activeElement) || document.activeElement === main) refresh(); }, 3000);
}

// -- audit and spend -------------------------------------------------------------------------

async function auditView() {
  const state = el("p", { "aria-live": "polite", id: "verification" }, "Verifying…");
  const rows = el("div");
  main.append(state, rows);
  try {
    const check = await api("/v1/audit/verify");
    const gaps = check.unanchored.map((u) => u.text).join("; ");
    state.replaceChildren(check.intact
      ? el("span", { class: "intact" }, `Verified: ${check.records} records, every link and checkpoint holds.`
        + (check.anchored ? "" : ` Not yet anchored: ${gaps}; a checkpoint is signed periodically and when the server stops.`))
      : el("span", { class: "tampered" }, `Tampered: ${check.problems.map((p) => p.text).join("; ")}`));
    const page = await api("/v1/audit?limit=200");
    rows.replaceChildren(page.records.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["#", "Type", "What", "Principal", "Run", "Decision"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, page.records.map(({ idx, record }) => el("tr", {},
        el("td", {}, idx), el("td", {}, record.type), el("td", {}, record.name || (record.decision || {}).resource || ""),
        el("td", {}, record.principal || ""), el("td", {}, record.run_id || ""),
        el("td", {}, (record.decision || {}).effect || record.status || "")))))
      : el("p", { class: "empty" }, "No audit records yet for this tenant."));
  } catch (error) { state.textContent = "Could not verify."; showProblem(String(error.message || error)); }
}

async function spendView() {
  try {
    const spend = await api("/v1/spend");
    const source = el("p", { class: "meta", id: "spend-source" }, spend.source === "ledger"
      ? "From the budget ledger: every run of the tenant this period, including the worst case held for calls in flight."
      : "From the journals of the tenant's most recent runs: no per-tenant budget is configured, so there is no ledger to read.");
    if (spend.source === "ledger") {
      main.append(el("p", {}, `Tenant ${spend.tenant}, against its budgets:`), source,
        el("table", {}, el("thead", {}, el("tr", {}, ["Period", "Measure", "Spent", "Budget", "Used"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, spend.ledger.map((line) => {
            const money = line.unit === "cost_usd";
            const show = (n) => money ? `$${n.toFixed(6)}` : String(n);
            return el("tr", {}, el("td", {}, line.period), el("td", {}, line.unit.replace("_", " ")),
              el("td", {}, show(line.spent)), el("td", {}, show(line.cap)),
              el("td", {}, line.cap ? `${Math.round(100 * line.spent / line.cap)}%` : "-"));
          }))));
      return;
    }
    const totals = spend.journals;
    const agents = Object.entries(totals.cost_usd_by_agent);
    main.append(el("p", {}, `Tenant ${spend.tenant}, over its last ${totals.runs} runs: ${totals.model_calls} model calls, `
      + `${totals.input_tokens} input and ${totals.output_tokens} output tokens, $${totals.cost_usd.toFixed(6)}`
      + (totals.unpriced_calls ? ` (plus ${totals.unpriced_calls} calls of models without a price)` : "") + "."), source,
      agents.length ? el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Agent"), el("th", { scope: "col" }, "Cost (USD)"))),
        el("tbody", {}, agents.map(([agent, cost]) => el("tr", {}, el("td", {}, agent), el("td", {}, cost.toFixed(6))))))
        : el("p", { class: "empty" }, "No priced model calls yet."));
  } catch (error) { showProblem(String(error.message || error)); }
}

const views = { runs: runsView, run: runView, approvals: approvalsView, audit: auditView, spend: spendView };
const view = views[main.dataset.view];
if (view) view().catch((error) => showProblem(String(error.message || error)));
