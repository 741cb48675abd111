// stratagem view: the runs table, one run's trace tree, the report. No dependencies, no
// build step. Every piece of data goes into the page as text (textContent), never as HTML.
"use strict";

const POLL_MS = Number(new URLSearchParams(location.search).get("poll")) || 2000;
const COLUMNS = [
  ["topology", "topology"], ["budget", "budget", true], ["policy", "policy"],
  ["suite", "suite"], ["seed", "seed", true], ["task_id", "task"], ["correct", "correct"],
  ["tokens_total", "tokens", true], ["waste_tokens", "waste", true], ["calls", "calls", true],
  ["transfers", "transfers", true], ["cost_usd", "cost $", true], ["wall_s", "wall s", true],
];
const state = {summary: null, query: {sort: "finished_at", desc: "0", offset: "0", limit: "50"}};

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function fmt(v, num) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(num ? 4 : 2);
  return String(v);
}

function correctCell(v) {
  if (v === true) return h("span", {class: "ok"}, "yes");
  if (v === false) return h("span", {class: "bad"}, "no");
  return h("span", {class: "none"}, "–");
}

function setNav(which) {
  for (const id of ["nav-runs", "nav-report"]) {
    document.getElementById(id).classList.toggle("active", id === `nav-${which}`);
  }
}

function parseHash() {
  const [path, qs] = location.hash.replace(/^#/, "").split("?");
  return {path: path || "/", params: new URLSearchParams(qs || "")};
}

function go(query) {
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "")).toString();
  location.hash = `#/?${qs}`;
}

// -- the runs table -------------------------------------------------------------------------

async function showRuns(params) {
  setNav("runs");
  state.query = {sort: "finished_at", desc: "0", offset: "0", limit: "50"};
  for (const [k, v] of params) state.query[k] = v;
  const main = document.getElementById("main");
  const page = await getJSON(`/api/runs?${new URLSearchParams(state.query)}`);
  const facets = state.summary.facets;
  const filters = h("div", {class: "filters", id: "filters"},
    state.summary.filters.map((name) => h("label", {},
      name,
      h("select", {name, id: `filter-${name}`, onchange: (e) => {
        go({...state.query, [name]: e.target.value, offset: "0"});
      }},
        h("option", {value: ""}, "all"),
        (facets[name] || []).map((v) => {
          const value = name === "correct" ? (v ? "1" : "0") : String(v);
          const label = name === "correct" ? (v ? "yes" : "no") : String(v);
          return h("option", {value, selected: state.query[name] === value}, label);
        })))));
  const head = h("tr", {}, COLUMNS.map(([key, label, num]) => {
    const sorted = state.query.sort === key;
    const arrow = sorted ? (state.query.desc === "1" ? " ▼" : " ▲") : "";
    return h("th", {class: `${num ? "num " : ""}${sorted ? "sorted" : ""}`, "data-sort": key,
      onclick: () => go({...state.query, sort: key, offset: "0",
        desc: sorted && state.query.desc !== "1" ? "1" : "0"})}, label + arrow);
  }));
  const body = h("tbody", {}, page.rows.map((row) => h("tr", {
    "data-run-id": row.run_id, onclick: () => { location.hash = `#/run/${row.run_id}`; },
  }, COLUMNS.map(([key, , num]) => h("td", {class: num ? "num" : null},
    key === "correct" ? correctCell(row.correct) : fmt(row[key], key === "cost_usd"))))));
  const first = page.total ? page.offset + 1 : 0;
  const last = Math.min(page.offset + page.rows.length, page.total);
  const offset = (d) => String(Math.max(0, page.offset + d * page.limit));
  const pager = h("div", {class: "pager"},
    h("button", {id: "prev", disabled: page.offset === 0,
      onclick: () => go({...state.query, offset: offset(-1)})}, "‹ prev"),
    h("span", {id: "range"}, `${first}–${last} of ${page.total} runs`),
    h("button", {id: "next", disabled: last >= page.total,
      onclick: () => go({...state.query, offset: offset(1)})}, "next ›"));
  main.replaceChildren(filters, pager,
    h("table", {id: "runs"}, h("thead", {}, head), body));
}

// -- one run --------------------------------------------------------------------------------

function tokens(x) {
  return `prompt ${x.prompt_tokens} · completion ${x.completion_tokens} · cached ` +
    `${fmt(x.cached_tokens)} · reasoning ${fmt(x.reasoning_tokens)}`;
}

function attemptItem(a) {
  const text = [];
  if (a.prompt !== undefined && a.prompt !== null) {
    // A Send's input is the task text plus the branch's settings: show the text, then those.
    const p = a.prompt;
    const isSend = typeof p === "object" && typeof p.task === "string";
    const extra = isSend ? Object.entries(p).filter(([k, v]) => k !== "task" && v !== null)
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ") : "";
    text.push(h("div", {class: "muted"}, "prompt (from the checkpoint)", extra ? ` · ${extra}` : ""),
      h("pre", {class: "prompt"}, isSend ? p.task
        : (typeof p === "string" ? p : JSON.stringify(p, null, 2))));
  }
  if (a.reply) text.push(h("div", {class: "muted"}, "reply"), h("pre", {class: "reply"}, a.reply));
  if (a.error) text.push(h("div", {class: "error"}, a.error));
  return h("li", {class: "attempt", "data-call-id": a.call_id,
    "data-total-tokens": a.total_tokens, "data-prompt-tokens": a.prompt_tokens,
    "data-completion-tokens": a.completion_tokens},
  h("span", {class: "role"}, a.role),
  h("span", {class: "tok"}, `${a.total_tokens} tokens (${tokens(a)})`), " · ",
  h("span", {class: `status-${a.status}`}, a.status), " · usage ", a.usage_source,
  a.cap_sent !== null && a.cap_sent !== undefined ? ` (cap ${a.cap_sent})` : "",
  " · ", `${fmt(a.latency_s)} s`, " · ", a.cost_usd === null ? "cost unknown" : `$${fmt(a.cost_usd, true)}`,
  a.branch !== null ? ` · branch ${a.branch}` : "", a.attempt > 1 ? ` · attempt ${a.attempt}` : "",
  text);
}

function nodeItem(n) {
  const inner = [h("ul", {}, n.attempts.map(attemptItem))];
  const shown = n.output && Object.keys(n.output).length ? n.output : null;
  if (!n.attempts.length && shown) {
    inner.push(h("pre", {class: "output"}, JSON.stringify(shown, null, 2)));
  }
  const label = n.attempts.length
    ? `${n.node} — ${n.attempts.length} attempt(s), ${n.sums.total_tokens} tokens`
    : `${n.node}`;
  return h("li", {class: "node", "data-node": n.node},
    h("details", {open: true}, h("summary", {}, label), inner));
}

function budgetChart(b) {
  const W = 640, H = 200, L = 50, B = 24, T = 10;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "budget");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el); return el;
  };
  const pts = b.points;
  const tMax = Math.max(1e-6, ...pts.map((p) => p.t), ...b.transfers.map((t) => t.t));
  const yMax = Math.max(1, b.allocated || 0, ...pts.map((p) => p.spent));
  const x = (t) => L + (t / tMax) * (W - L - 10);
  const y = (v) => H - B - (v / yMax) * (H - B - T);
  add("line", {x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#999"});
  add("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"});
  add("text", {x: 4, y: y(yMax) + 4, "font-size": 10}, String(yMax));
  add("text", {x: 4, y: H - B, "font-size": 10}, "0");
  add("text", {x: W - 80, y: H - 6, "font-size": 10}, `${tMax.toFixed(3)} s`);
  if (b.allocated) {
    add("line", {x1: L, y1: y(b.allocated), x2: W - 10, y2: y(b.allocated), stroke: "#b00020",
      "stroke-dasharray": "4 3"});
    add("text", {x: L + 4, y: y(b.allocated) - 3, "font-size": 10, fill: "#b00020"},
      `allocated ${b.allocated}`);
  }
  let d = "";
  pts.forEach((p, i) => {
    d += `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(i ? pts[i - 1].spent : 0).toFixed(1)}`;
    d += `L${x(p.t).toFixed(1)},${y(p.spent).toFixed(1)}`;
  });
  add("path", {d, fill: "none", stroke: "#1f5fa8", "stroke-width": 2, class: "spent"});
  for (const t of b.transfers) {
    const mark = add("line", {x1: x(t.t), y1: T, x2: x(t.t), y2: H - B, stroke: "#e08a00",
      "stroke-width": 2, class: "transfer"});
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${t.tokens} tokens ${t.from} → ${t.to}: ${t.reason}`;
    mark.append(title);
  }
  return svg;
}

async function showRun(runId) {
  setNav("runs");
  const main = document.getElementById("main");
  const t = await getJSON(`/api/run/${encodeURIComponent(runId)}`);
  const r = t.run;
  const dl = h("dl", {class: "summary"},
    [["run", r.run_id], ["topology", r.topology], ["budget", `${r.budget} (allocated ${r.allocated})`],
      ["policy", r.policy], ["suite / task", `${r.suite} / ${r.task_id}`], ["seed", r.seed],
      ["correct", r.correct === null ? "–" : (r.correct ? "yes" : "no")],
      ["answer", r.answer], ["stop reason", r.stop_reason], ["error", r.error || "–"]]
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, fmt(v))]));
  const totals = h("p", {id: "totals", "data-total-tokens": t.totals.total_tokens},
    `Billed over ${t.nodes.reduce((s, n) => s + n.attempts.length, 0)} attempt(s): ` +
    `${t.totals.total_tokens} tokens (${tokens(t.totals)})`);
  const transfers = t.budget.transfers.length
    ? h("ul", {id: "transfers"}, t.budget.transfers.map((m) =>
      h("li", {}, `+${fmt(m.t)} s: ${m.tokens} tokens ${m.from} → ${m.to} (${m.reason})`)))
    : h("p", {class: "muted"}, "No budget transfers.");
  main.replaceChildren(...[
    h("p", {}, h("a", {href: "#/", onclick: (e) => { e.preventDefault(); history.back(); }},
      "‹ back to the runs")),
    h("h2", {}, `Run ${r.run_id}`, r.simulated ? [" ", h("span", {class: "sim"}, "SIMULATED")] : []),
    dl, totals,
    h("h3", {}, "Trace"),
    t.durable ? null : h("p", {class: "muted"},
      "Not a durable run: no checkpoints, so no prompt or reply text."),
    h("ul", {class: "tree", id: "trace"}, t.nodes.map(nodeItem)),
    h("h3", {}, "Budget over the run"), budgetChart(t.budget), transfers].filter(Boolean));
}

// -- the report, the live mode, the router ----------------------------------------------------

function showReport() {
  setNav("report");
  document.getElementById("main").replaceChildren(
    h("p", {class: "muted"}, "The ablation's report (plots, attribution, findings), as ",
      h("code", {}, "stratagem report"), " writes it. ",
      h("a", {href: "/report/", target: "_blank"}, "Open it alone")),
    h("iframe", {class: "report", src: "/report/", title: "report"}));
}

async function route() {
  const {path, params} = parseHash();
  try {
    if (path.startsWith("/run/")) await showRun(decodeURIComponent(path.slice(5)));
    else if (path === "/report") showReport();
    else await showRuns(params);
  } catch (err) {
    document.getElementById("main").replaceChildren(h("p", {class: "error"}, String(err.message)));
  }
}

function setStatus(runs, when) {
  document.getElementById("status").textContent =
    `${runs} runs · ${when ? `updated ${new Date().toLocaleTimeString()}` : "loaded"}`;
}

async function poll() {
  if (document.getElementById("live").checked) {
    try {
      const s = await getJSON("/api/status");
      if (s.new > 0) {
        state.summary = await getJSON("/api/summary");
        setStatus(s.runs, true);
        if (parseHash().path === "/") await route();
      }
    } catch (err) {
      document.getElementById("status").textContent = `offline: ${err.message}`;
    }
  }
  setTimeout(poll, POLL_MS);
}

async function start() {
  state.summary = await getJSON("/api/summary");
  document.getElementById("folder").textContent = state.summary.folder;
  setStatus(state.summary.runs, false);
  window.addEventListener("hashchange", route);
  await route();
  setTimeout(poll, POLL_MS);
}

start();
