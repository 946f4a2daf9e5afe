// The explorer's pages: each fills <main> from the JSON API and redraws when the chain grows.
"use strict";
const main = document.getElementById("main");
const page = document.body.dataset.page;
const get = async (path) => {
  const answer = await fetch(path);
  if (!answer.ok) throw new Error(`${path}: ${answer.status}`);
  return answer.json();
};
const esc = (v) => String(v ?? "–").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const coins = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
const link = (kind, id) => `<a href="/${kind}/${id}">${kind === "participant" ? "#" : ""}${esc(id)}</a>`;
const table = (heads, rows) =>
  `<table><tr>${heads.map((h) => `<th>${h}</th>`).join("")}</tr>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</table>`;
const card = (label, value) => `<div class="card">${label}<b>${value}</b></div>`;
const charts = {};
function chart(id, config) {
  if (!window.Chart) return;
  if (charts[id]) charts[id].destroy();
  charts[id] = new window.Chart(document.getElementById(id), { ...config, options: { animation: false, ...(config.options || {}) } });
}

let lastHeight = -1;
async function status() {
  const s = await get("/api/status");
  const indexing = s.indexing ? ` · indexing ${s.indexing.verified} of ${s.indexing.stored} blocks` : "";
  document.getElementById("status").textContent = `round ${s.round} · ${s.phase} · height ${s.height}${indexing}`;
  const bad = document.getElementById("bad");
  if (s.bad_block) {
    bad.hidden = false;
    bad.textContent = `This chain fails verification at block ${s.bad_block.height}: ${s.bad_block.reason}. Nothing after it is shown.`;
  }
  return s;
}

const pages = {
  async timeline(s) {
    const [data, series] = await Promise.all([get("/api/rounds?limit=20"), get("/api/series")]);
    const rows = data.rounds.map((r) => [
      r.round,
      r.blocks.map((b) => `<a href="/block/${b.height}">${b.kind}</a> by ${link("participant", b.miner)} (${b.items})`).join(" · "),
      r.models, r.selected, coins(r.supply_coins), r.gini.toFixed(3),
      (r.appeal_coins || r.forfeited_coins ? `${coins(r.appeal_coins)} / ${coins(r.forfeited_coins)}` : "–") +
        (r.challenger >= 0 ? ` · challenged by ${link("participant", r.challenger)}` : ""),
    ]);
    main.innerHTML =
      `<div class="cards">${card("round", s.round)}${card("phase", s.phase)}${card("settled rounds", s.settled_rounds)}${card("participants", s.participants)}</div>` +
      `<canvas id="supply"></canvas>` +
      `<h2>Latest rounds</h2><div id="timeline">${table(["round", "blocks (miner, items)", "models", "selected", "supply", "gini", "appeal: paid / forfeited"], rows)}</div>`;
    const xs = series.rounds.map((r) => r.round);
    chart("supply", {
      type: "line",
      data: { labels: xs, datasets: [
        { label: "supply (coins)", data: series.rounds.map((r) => r.supply_coins), yAxisID: "y" },
        { label: "gini", data: series.rounds.map((r) => r.gini), yAxisID: "y1" },
        { label: "pairs per live model", data: series.rounds.map((r) => r.pairs_per_live_model), yAxisID: "y1" },
      ] },
      options: { scales: { y: { position: "left" }, y1: { position: "right" } } },
    });
  },
  async block() {
    const b = await get(`/api/block/${document.body.dataset.height}`);
    main.innerHTML = `<h2>Block ${b.height}: ${esc(b.kind)} of round ${b.round}</h2>` +
      table(["field", "value"], [["miner", link("participant", b.miner)], ["items", b.items], ["miner reward (units)", esc(b.miner_reward)], ["hash", `<span class="hash">${b.hash}</span>`]]) +
      `<p>${b.height > 0 ? `<a href="/block/${b.height - 1}">← previous</a>` : ""} <a href="/block/${b.height + 1}">next →</a></p>`;
  },
  async participant() {
    const p = await get(`/api/participant/${document.body.dataset.who}`);
    const t = p.rewards_total;
    main.innerHTML = `<h2>Participant #${p.participant}</h2><div class="cards">${card("coins", coins(p.coins))}${card("models trained", p.models_trained)}${card("selected", p.models_selected)}${card("paid for models", p.paid_for_models)}${card("blocks mined", p.blocks_mined)}</div>` +
      `<canvas id="balance"></canvas>` +
      `<h3>Rewards by reason (coins)</h3><div id="rewards">${table(["lineage", "miner items", "refunds", "deposits", "transfers"], [[coins(t.lineage), coins(t.miner), coins(t.refunds), coins(t.deposits), coins(t.transfers)]])}` +
      table(["round", "lineage", "miner items", "refunds", "deposits", "transfers"], p.rewards_recent.map((r) => [r.round, coins(r.lineage), coins(r.miner), coins(r.refunds), coins(r.deposits), coins(r.transfers)])) + `</div>` +
      `<h3>Models trained</h3>` + table(["model", "round", "score", "selected", "children"], p.models.map((m) => [link("model", m.id), m.round, esc(m.score), m.selected ? "yes" : "no", m.children]));
    chart("balance", { type: "line", data: { labels: p.balance.map((b) => b.round), datasets: [{ label: "balance (coins)", data: p.balance.map((b) => b.coins) }] } });
  },
  async model() {
    const m = await get(`/api/model/${document.body.dataset.model}`);
    const paid = m.paid_because_of_it;
    main.innerHTML = `<h2>Model ${m.id}</h2><div class="cards">${card("version", m.version)}${card("score", esc(m.score))}${card("selected", m.selected ? "yes" : "no")}${card("trainer", link("participant", m.trainer))}${card("paid: model owner", link("participant", paid.payee))}${card("selections paid", esc(paid.selections))}${card("descendants", esc(m.descendants))}</div>` +
      `<h3>Lineage back to genesis (${m.lineage_length} models) and children</h3><div id="lineage"></div>` +
      table(["model", "version", "trainer", "score", "selected"], m.lineage.map((a) => [link("model", a.id), a.version, link("participant", a.trainer), esc(a.score), a.selected ? "yes" : "no"]));
    if (!window.cytoscape) return;
    // newest 12 ancestors left to right ending at this model, then its children stacked on the right
    const chain = m.lineage.slice(0, 13).reverse();
    const nodes = chain.map((a, i) => ({
      data: { id: `m${a.id}`, label: `#${a.id} v${a.version}${a.selected ? " ✓" : ""}`, model: a.id, kind: a.id === m.id ? "self" : "ancestor" },
      position: { x: i * 110, y: 0 },
    }));
    const edges = chain.slice(1).map((a, i) => ({ data: { source: `m${chain[i].id}`, target: `m${a.id}` } }));
    const kids = m.children_ids.slice(0, 12);
    kids.forEach((c, k) => {
      nodes.push({ data: { id: `m${c}`, label: `#${c}`, model: c, kind: "child" }, position: { x: chain.length * 110, y: (k - (kids.length - 1) / 2) * 50 } });
      edges.push({ data: { source: `m${m.id}`, target: `m${c}` } });
    });
    const graph = window.cytoscape({
      container: document.getElementById("lineage"),
      elements: { nodes, edges },
      layout: { name: "preset", fit: true, padding: 30 },
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 11, "text-valign": "top", "background-color": "#6a8caf" } },
        { selector: "node[kind = 'self']", style: { "background-color": "#d9822b", width: 36, height: 36 } },
        { selector: "node[kind = 'child']", style: { "background-color": "#8fbf7f" } },
        { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle", width: 1.5 } },
      ],
    });
    graph.on("tap", "node", (e) => { window.location.href = `/model/${e.target.data("model")}`; });
    window.lineageGraph = graph;
  },
  async leaderboard() {
    const l = await get("/api/leaderboard?limit=25");
    main.innerHTML = `<h2>Leaderboard</h2>` + table(["rank", "participant", "coins", "models selected"], l.participants.map((p, i) => [i + 1, link("participant", p.participant), coins(p.coins), p.models_selected]));
  },
  async figures() {
    const f = await get("/api/figures");
    main.innerHTML = `<h2>Coins per participant</h2><canvas id="coins"></canvas><h2>Newest version each participant trained</h2><canvas id="versions"></canvas>`;
    chart("coins", { type: "bar", data: { labels: f.coins.map((_, i) => i + 1), datasets: [{ label: "coins (sorted)", data: f.coins }] } });
    const keys = Object.keys(f.versions);
    chart("versions", { type: "bar", data: { labels: keys.map((k) => (k === "older" ? "older" : k === "0" ? "latest" : `latest-${k}`)), datasets: [{ label: "participants", data: keys.map((k) => f.versions[k]) }] } });
  },
  async missing() {
    main.innerHTML = `<p class="missing">Not found: ${esc(document.body.dataset.missing)}.</p><p><a href="/">back to the rounds</a></p>`;
  },
};

async function refresh() {
  try {
    const s = await status();
    if (s.height !== lastHeight) {
      lastHeight = s.height;
      await pages[page](s);
      document.body.dataset.height_seen = String(s.height);
    }
  } catch (err) {
    document.getElementById("status").textContent = `offline (${err.message})`;
  }
}
refresh();
if (["timeline", "leaderboard", "figures", "participant"].includes(page)) setInterval(refresh, 1000);
