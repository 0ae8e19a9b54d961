// runbox dashboard: reads /events (Server-Sent Events) and draws the cluster. No library,
// nothing fetched from elsewhere; every text from the server goes in through textContent.
"use strict";

(function () {
  const SVGNS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a fetch
  const state = { view: null, samples: [], intervalMS: 1000, windowMS: 600000, skew: 0 };

  // ---- small helpers ----
  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function badge(text, kind) { return el("span", "badge b-" + String(kind || text).replace(/[^a-z_]/gi, ""), text); }
  const now = () => Date.now() + state.skew; // the server's clock, as far as we can tell
  const ms = (t) => (t ? Date.parse(t) : 0);
  function dur(msv) {
    if (msv === undefined || msv === null || msv < 0) return "–";
    if (msv < 1000) return Math.round(msv) + " ms";
    const s = msv / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
  }
  function ago(t) {
    const d = now() - ms(t);
    if (!ms(t)) return "–";
    if (d < 1500) return "just now";
    if (d < 60000) return Math.round(d / 1000) + "s ago";
    if (d < 3600000) return Math.round(d / 60000) + "m ago";
    return new Date(ms(t)).toLocaleTimeString();
  }
  function bytes(n) {
    if (n === undefined || n === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + u[i];
  }
  const pct = (v) => (v || 0).toFixed((v || 0) < 10 ? 1 : 0) + "%";
  const shortID = (id) => (id.length > 8 ? "…" + id.slice(-8) : id);
  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }
  function row(cells) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td", c.cls || "");
      if (c.node) td.append(c.node); else td.textContent = c.text === undefined ? "" : String(c.text);
      if (c.title) td.title = c.title;
      tr.append(td);
    }
    return tr;
  }

  // ---- charts: hand-drawn SVG, x from now-window to now, y from 0 to max ----
  // series: [{cls, pts: [[t, v], ...], area}]; a gap longer than 3 samples breaks a line.
  function chart(box, series, ymax, ylabel) {
    const W = 600, H = 100, t1 = now(), t0 = t1 - state.windowMS;
    const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) svg.append(svgEl("line", { class: "grid", x1: 0, x2: W, y1: H * f, y2: H * f }));
    const x = (t) => ((t - t0) / (t1 - t0)) * W;
    const y = (v) => H - Math.min(Math.max(v / ymax, 0), 1) * H;
    const gap = state.intervalMS * 3.5;
    let any = false;
    for (const s of series) {
      let d = "", a = "", prev = null, segStart = null;
      for (const [t, v] of s.pts) {
        if (t < t0 || v === null || v === undefined) { prev = null; continue; }
        const X = x(t).toFixed(1), Y = y(v).toFixed(1);
        if (prev === null || t - prev > gap) {
          if (s.area && segStart !== null) a += "L" + x(prev).toFixed(1) + "," + H + "L" + segStart + "," + H + "Z";
          d += "M" + X + "," + Y; a += "M" + X + "," + Y; segStart = X;
        } else { d += "L" + X + "," + Y; a += "L" + X + "," + Y; }
        prev = t; any = true;
      }
      if (s.area && segStart !== null) {
        a += "L" + x(prev).toFixed(1) + "," + H + "L" + segStart + "," + H + "Z";
        svg.append(svgEl("path", { class: "a-" + s.cls, d: a }));
      }
      if (d) svg.append(svgEl("path", { class: "l-" + s.cls, d: d }));
    }
    const mins = Math.round(state.windowMS / 60000);
    box.replaceChildren(svg, el("span", "ax ymax", ylabel), el("span", "ax x0", "−" + mins + " min"), el("span", "ax x1", "now"));
    if (!any) box.append(el("div", "nodata", "collecting samples…"));
  }
  function niceMax(v, floor) {
    v = Math.max(v, floor);
    for (const m of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]) if (v <= m) return m;
    return Math.ceil(v / 10000) * 10000;
  }

  // ---- rendering ----
  function tile(label, value, hint, alert) {
    const t = el("div", "tile" + (alert ? " alert" : ""));
    t.append(el("div", "label", label));
    const v = el("div", "value");
    if (Array.isArray(value)) { v.append(String(value[0]), el("small", "", " " + value[1])); } else v.textContent = String(value);
    t.append(v);
    if (hint) t.append(el("div", "hint", hint));
    return t;
  }
  function renderTiles(v) {
    const slaves = v.nodes.filter((n) => n.role === "slave");
    const draining = v.nodes.filter((n) => n.state !== "ready").length;
    const t = v.totals, r = v.rates || {};
    const perMin = r.window_s ? "over the last " + (r.window_s >= 59 ? "minute" : Math.round(r.window_s) + " s") : "measuring…";
    $("tiles").replaceChildren(
      tile("Nodes", v.nodes.length, "master + " + slaves.length + " slave" + (slaves.length === 1 ? "" : "s") + (draining ? ", " + draining + " draining" : "")),
      tile("Running", [v.running.length, "/ " + v.capacity], "programs / slots"),
      tile("Queued", v.queued.length, v.queued.length ? "oldest waits " + dur(now() - ms(v.queued[0].submitted)) : "no wait"),
      tile("Jobs / s", (r.finished_per_s || 0).toFixed(2), perMin),
      tile("Finished", t.finished, t.accepted + " accepted"),
      tile("Could not run", t.failed, "no program result", t.failed > 0),
      tile("Busy", t.rejected, (r.rejected_per_s || 0).toFixed(2) + "/s turned away", r.rejected_per_s > 0),
      tile("Retried", t.retried, "after a node loss"),
    );
  }
  const statusColors = { ok: "--ok", compile_error: "--warn", runtime_error: "--bad", time_limit: "--info", memory_limit: "--pink", output_limit: "--accent" };
  function renderStatusBar(v) {
    const by = Object.assign({}, v.totals.by_status || {});
    if (v.totals.failed) by.error = v.totals.failed;
    const total = Object.values(by).reduce((a, b) => a + b, 0);
    const bar = el("div", "statusbar"), keys = el("div", "statuskeys");
    for (const k of Object.keys(by).sort((a, b) => by[b] - by[a])) {
      const s = el("span");
      s.style.width = (100 * by[k] / Math.max(total, 1)) + "%";
      s.style.background = "var(" + (statusColors[k] || "--gray") + ")";
      s.title = k + ": " + by[k];
      bar.append(s);
      const key = el("span");
      key.append(badge(k), " ", el("b", "", by[k]));
      keys.append(key);
    }
    if (!total) keys.append(el("span", "", "no finished job yet"));
    $("statusbar").replaceChildren(bar, keys);
    $("statusbar").className = "";
  }
  function renderCharts() {
    const S = state.samples;
    const run = S.map((s) => [s.t, s.running]), q = S.map((s) => [s.t, s.queued]), cap = S.map((s) => [s.t, s.capacity]);
    const top = niceMax(Math.max(0, ...S.map((s) => Math.max(s.running, s.queued, s.capacity))), 2);
    chart($("chart-programs"), [{ cls: "running", pts: run, area: true }, { cls: "capacity", pts: cap }, { cls: "queued", pts: q }], top, String(top));
    // finished/s and busy/s, each point averaged over the 10 s before it
    const fin = [], rej = [];
    for (let i = 0; i < S.length; i++) {
      let j = i;
      while (j > 0 && S[i].t - S[j - 1].t <= 10000) j--;
      const dt = (S[i].t - S[j].t) / 1000;
      fin.push([S[i].t, dt >= 1 ? Math.max(S[i].finished - S[j].finished, 0) / dt : null]);
      rej.push([S[i].t, dt >= 1 ? Math.max(S[i].rejected - S[j].rejected, 0) / dt : null]);
    }
    const rtop = niceMax(Math.max(0, ...fin.map((p) => p[1] || 0), ...rej.map((p) => p[1] || 0)), 1);
    chart($("chart-rate"), [{ cls: "finished", pts: fin, area: true }, { cls: "rejected", pts: rej }], rtop, rtop + " /s");
  }
  function meter(label, cls, value, text, cool) {
    const m = el("div", "meter");
    const bar = el("div", "bar " + cls + (value >= 90 && !cool ? " hot" : ""));
    const fillEl = el("span");
    fillEl.style.width = Math.min(Math.max(value, 0), 100) + "%";
    bar.append(fillEl);
    m.append(el("span", "k", label), bar, el("span", "v", text));
    return m;
  }
  function renderNodes(v) {
    const cards = v.nodes.map((n) => {
      const c = el("div", "card node");
      const head = el("div", "name");
      head.append(el("strong", "", n.name), badge(n.role), badge(n.state));
      c.append(head);
      c.append(meter("Jobs", "jobs", n.capacity ? (100 * n.running) / n.capacity : 0, n.running + " / " + n.capacity + " slots", true));
      const memPct = n.load.mem_total ? (100 * n.load.mem_used) / n.load.mem_total : 0;
      c.append(meter("CPU", "cpu", n.load.cpu, pct(n.load.cpu)));
      c.append(meter("Mem", "mem", memPct, n.load.mem_total ? bytes(n.load.mem_used) + " / " + bytes(n.load.mem_total) : "–"));
      const box = el("div", "chart small");
      const cpu = [], mem = [];
      for (const s of state.samples) {
        const x = s.nodes && s.nodes[n.name];
        cpu.push([s.t, x ? x.cpu : null]);
        mem.push([s.t, x && x.mem_total ? (100 * x.mem_used) / x.mem_total : null]);
      }
      c.append(box);
      chart(box, [{ cls: "mem", pts: mem }, { cls: "cpu", pts: cpu }], 100, "100%");
      const meta = el("div", "meta");
      meta.append(el("span", "", (n.languages && n.languages.length ? n.languages.join(", ") : "all languages")),
        el("span", "", n.done + " done"),
        el("span", "", "joined " + ago(n.joined)));
      if (n.role === "slave") {
        const beat = now() - ms(n.last_beat);
        meta.append(el("span", "", "beat " + (beat < 1500 ? "now" : ago(n.last_beat))));
        if (beat > 2500) c.classList.add("stale");
      }
      c.append(meta);
      return c;
    });
    $("nodes").replaceChildren(...cards);
  }
  const owner = (j) => ({ text: j.owner || "–", cls: "owner" });
  function renderJobs(v) {
    fill($("running").tBodies[0], v.running.map((j) => row([
      { text: shortID(j.id), cls: "id", title: j.id }, owner(j), { text: j.language }, { text: j.node || "–" },
      { text: dur(now() - ms(j.started)), cls: "num" }, { text: j.attempts, cls: "num opt" },
    ])));
    fill($("queued").tBodies[0], v.queued.map((j, i) => row([
      { text: i + 1, cls: "num" }, { text: shortID(j.id), cls: "id", title: j.id }, owner(j), { text: j.language },
      { text: dur(now() - ms(j.submitted)), cls: "num" },
    ])));
    fill($("recent").tBodies[0], v.recent.map((j) => row([
      { text: ago(j.finished), title: new Date(ms(j.finished)).toLocaleString() },
      { text: shortID(j.id), cls: "id", title: j.id }, owner(j), { text: j.language }, { text: j.node || "–", cls: "opt" },
      { node: badge(j.outcome || "error"), title: j.error || "" },
      { text: j.time_ms !== undefined ? dur(j.time_ms) : j.compile_ms !== undefined ? "compile " + dur(j.compile_ms) : "–", cls: "num",
        title: j.compile_ms !== undefined ? "compile " + dur(j.compile_ms) : "" },
      { text: j.memory_bytes === undefined ? "–" : bytes(j.memory_bytes), cls: "num" },
      { text: j.wait_ms === undefined ? "–" : dur(j.wait_ms), cls: "num opt" },
      { text: j.attempts, cls: "num opt" },
    ])));
    fill($("events").tBodies[0], (v.node_events || []).map((e) => row([
      { text: ago(e.at), title: new Date(ms(e.at)).toLocaleString() }, { text: e.node },
      { node: badge(e.kind) }, { text: e.reason || "", cls: "detail" },
    ])));
    $("running-count").textContent = v.running.length ? "· " + v.running.length : "";
    $("queued-count").textContent = v.queued.length ? "· " + v.queued.length : "";
    // Owners come only to the token's holder (the master sends none otherwise): their
    // column shows when a job of the list has one.
    for (const [id, list] of [["running", v.running], ["queued", v.queued], ["recent", v.recent]]) {
      $(id).classList.toggle("with-owner", list.some((j) => j.owner));
    }
    for (const [id, list] of [["running", v.running], ["queued", v.queued], ["recent", v.recent], ["events", v.node_events || []]]) {
      $(id).classList.toggle("hidden", list.length === 0);
      $(id + "-empty").classList.toggle("hidden", list.length > 0);
    }
  }
  function render() {
    const v = state.view;
    if (!v) return;
    renderTiles(v);
    renderStatusBar(v);
    renderCharts();
    renderNodes(v);
    renderJobs(v);
  }

  // ---- data ----
  function setConn(s, text) {
    $("conn").dataset.state = s;
    $("conn-text").textContent = text;
  }
  function trim() {
    const cut = now() - state.windowMS;
    let i = 0;
    while (i < state.samples.length && state.samples[i].t < cut) i++;
    if (i) state.samples.splice(0, i);
  }
  function onView(v) {
    state.view = v;
    state.skew = ms(v.at) - Date.now();
    setConn("live", v.ready ? "live · " + new Date(ms(v.at)).toLocaleTimeString() : "waiting for the scheduler");
    render();
  }
  function connect() {
    if (!window.EventSource) { poll(); return; }
    const es = new EventSource("/events");
    es.addEventListener("history", (e) => {
      const h = JSON.parse(e.data);
      state.intervalMS = h.interval_ms || 1000;
      state.windowMS = h.window_ms || 600000;
      state.samples = h.samples || [];
    });
    es.addEventListener("update", (e) => {
      const u = JSON.parse(e.data);
      const last = state.samples[state.samples.length - 1];
      if (u.sample && (!last || u.sample.t > last.t)) state.samples.push(u.sample);
      onView(u.view);
      trim();
    });
    es.onerror = () => {
      setConn("down", "reconnecting…");
      // A refused stream (503, 429: every slot taken) closes for good: try again later.
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 10000);
    };
  }
  function poll() {
    fetch("/api/status", { credentials: "same-origin" }).then((r) => r.json()).then(onView)
      .catch(() => setConn("down", "unreachable")).finally(() => setTimeout(poll, 2000));
  }
  // Elapsed times and "ago" tick even between updates.
  setInterval(() => { if (state.view && Date.now() - ms(state.view.at) + state.skew > 1500) render(); }, 1000);
  connect();
})();
