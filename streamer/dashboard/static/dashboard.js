// The live task table. The server pushes at most a few batches a second on /events: a
// snapshot of the board when the stream (re)opens, then only the rows that changed and the
// ids that left the board. Rows are kept in a Map by task id; at most MAX_ROWS of those
// matching the filters are in the DOM, updated in place, so a board of thousands of tasks
// stays cheap to show. Every task string goes in with textContent, never as markup.
"use strict";

(() => {
  const f = window.streamerFormat;
  const params = new URLSearchParams(location.search);
  const MAX_ROWS = Math.max(parseInt(params.get("rows"), 10) || 200, 1);
  const CELLS = ["id", "type", "state", "progress", "items", "rate", "eta", "elapsed", "worker",
    "tags"];
  const NUMERIC = new Set(["items", "rate", "eta", "elapsed"]);

  const tasks = new Map(); // task id -> row, as the server last sent it
  const shown = new Map(); // task id -> <tr> in the table
  let offset = 0; // server clock minus ours, seconds
  let summary = null;
  let pending = false;

  // What tests (and curious people in the console) can read.
  const stats = { batches: 0, snapshots: 0, rows: 0, lastBatch: null, renders: 0 };
  window.streamerDashboard = { stats, tasks };

  const $ = (id) => document.getElementById(id);
  const tbody = $("tasks").tBodies[0];
  const filters = { state: $("state"), tag: $("tag"), q: $("q") };
  for (const [name, input] of Object.entries(filters)) {
    input.value = params.get(name) || "";
    input.addEventListener("input", () => { saveFilters(); schedule(); });
  }
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  filters.tag.addEventListener("focus", fillTags);

  function saveFilters() {
    const query = new URLSearchParams(location.search);
    for (const [name, input] of Object.entries(filters)) {
      if (input.value) query.set(name, input.value); else query.delete(name);
    }
    const search = query.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
  }

  function fillTags() {
    const seen = new Set();
    for (const task of tasks.values()) {
      for (const tag of task.tags) seen.add(tag);
      if (seen.size >= 500) break;
    }
    const options = [...seen].sort().map((tag) => {
      const option = document.createElement("option");
      option.value = tag;
      return option;
    });
    $("tags").replaceChildren(...options);
  }

  function matches(task, state, tag, text) {
    if (state) {
      const ended = f.TERMINAL.has(task.state);
      if (state === "active" ? ended : state === "ended" ? !ended : task.state !== state) {
        return false;
      }
    }
    if (tag && !task.tags.includes(tag)) return false;
    if (text) {
      const fields = [task.id, task.type || "", task.worker || "", task.state, ...task.tags];
      if (!fields.some((value) => value.toLowerCase().includes(text))) return false;
    }
    return true;
  }

  // Active tasks first, newest started first; then ended ones, most recently ended first.
  // Not by last update, as the terminal view does: on a page rows that jump four times a
  // second cannot be read or clicked.
  function order(a, b) {
    const aEnded = a.end !== null;
    const bEnded = b.end !== null;
    if (aEnded !== bEnded) return aEnded ? 1 : -1;
    const diff = aEnded ? b.end - a.end : b.start - a.start;
    return diff || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  function newRow(id) {
    const tr = document.createElement("tr");
    tr.cells_ = {};
    for (const name of CELLS) {
      const td = document.createElement("td");
      td.className = NUMERIC.has(name) ? `${name} num` : name;
      tr.cells_[name] = td;
      tr.append(td);
    }
    const link = document.createElement("a");
    link.href = `/tasks/${encodeURIComponent(id)}`;
    link.textContent = id.length > 12 ? `${id.slice(0, 11)}…` : id;
    link.title = id;
    tr.cells_.id.append(link);
    const bar = document.createElement("progress");
    const pct = document.createElement("span");
    pct.className = "pct";
    tr.cells_.progress.append(bar, pct);
    tr.values_ = {};
    return tr;
  }

  function setText(tr, name, text, title) {
    if (tr.values_[name] === text) return;
    tr.values_[name] = text;
    const td = tr.cells_[name];
    td.textContent = text;
    if (title !== undefined) td.title = title;
  }

  function fill(tr, task, now) {
    tr.dataset.state = task.state;
    setText(tr, "type", f.shortType(task.type), task.type || "");
    const state = tr.cells_.state;
    if (tr.values_.state !== task.state) {
      tr.values_.state = task.state;
      state.textContent = task.state;
      state.className = `${f.stateClass(task.state)}`;
      state.title = task.error || "";
    }
    const bar = tr.cells_.progress.firstChild;
    f.setProgress(bar, task);
    bar.title = f.items(task);
    const pct = f.percent(task);
    if (bar.nextSibling.textContent !== pct) bar.nextSibling.textContent = pct;
    setText(tr, "items", f.items(task));
    setText(tr, "rate", f.rate(task.rate));
    setText(tr, "eta", f.duration(task.eta));
    setText(tr, "elapsed", f.duration(f.elapsed(task, now)));
    setText(tr, "worker", task.worker || f.NO_VALUE, task.worker || "");
    const tags = task.tags.join(", ");
    setText(tr, "tags", tags, tags);
  }

  function render() {
    pending = false;
    stats.renders += 1;
    const now = Date.now() / 1000 + offset;
    const state = filters.state.value;
    const tag = filters.tag.value;
    const text = filters.q.value.trim().toLowerCase();
    const matching = [];
    for (const task of tasks.values()) {
      if (matches(task, state, tag, text)) matching.push(task);
    }
    matching.sort(order);
    const visible = matching.slice(0, MAX_ROWS);
    const keep = new Set();
    let previous = null;
    for (const task of visible) {
      let tr = shown.get(task.id);
      if (tr === undefined) {
        tr = newRow(task.id);
        shown.set(task.id, tr);
      }
      fill(tr, task, now);
      keep.add(task.id);
      const wanted = previous === null ? tbody.firstChild : previous.nextSibling;
      if (wanted !== tr) tbody.insertBefore(tr, wanted);
      previous = tr;
    }
    for (const [id, tr] of shown) {
      if (!keep.has(id)) {
        tr.remove();
        shown.delete(id);
      }
    }
    const hidden = matching.length - visible.length;
    $("hidden").textContent = hidden > 0
      ? `${f.number.format(hidden)} more matching tasks not shown (the ${MAX_ROWS} first ` +
        `of ${f.number.format(matching.length)}; ${f.number.format(tasks.size)} on the board)`
      : "";
    showSummary();
  }

  function schedule() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(render);
    }
  }

  function showSummary() {
    if (summary === null) return;
    const s = summary;
    const parts = [];
    const states = Object.entries(s.by_state).sort(([a], [b]) => (a < b ? -1 : 1));
    const head = document.createElement("b");
    head.textContent = `${f.number.format(s.tasks)} task${s.tasks === 1 ? "" : "s"}`;
    parts.push(head);
    if (states.length) {
      parts.push(": " + states.map(([state, n]) => `${f.number.format(n)} ${state}`).join(", "));
    }
    parts.push(
      ` │ ${f.number.format(Math.round(s.rate))} reports/s, ${f.number.format(s.received)} ` +
      `received │ ${f.number.format(s.malformed)} malformed, ${f.number.format(s.gaps)} gaps, ` +
      `${f.number.format(s.ignored)} stale/repeated`,
    );
    $("summary").replaceChildren(...parts);
    connection(s.consuming ? "live" : "no-broker");
  }

  function connection(status) {
    const el = $("connection");
    if (el.dataset.status === status) return;
    el.dataset.status = status;
    el.textContent = {
      live: "live",
      "no-broker": "connecting to the broker…",
      connecting: "reconnecting…",
    }[status];
  }

  function apply(batch) {
    offset = batch.now - Date.now() / 1000;
    for (const row of batch.rows) tasks.set(row.id, row);
    for (const id of batch.removed) tasks.delete(id);
    summary = batch.summary;
    stats.rows += batch.rows.length;
    stats.lastBatch = batch.n;
    schedule();
  }

  const events = new EventSource("/events");
  events.addEventListener("snapshot", (event) => {
    tasks.clear();
    stats.snapshots += 1;
    apply(JSON.parse(event.data));
  });
  events.addEventListener("message", (event) => {
    stats.batches += 1;
    apply(JSON.parse(event.data));
  });
  events.addEventListener("error", () => connection("connecting"));

  setInterval(schedule, 1000); // elapsed times tick between batches
})();
