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
    "tags", "error"];
  const NUMERIC = new Set(["items", "rate", "eta", "elapsed"]);
  // Sortable columns: a header click sorts by it, a second click reverses. Unsorted, the
  // default order below applies.
  const SORT_KEYS = {
    id: (t) => t.id,
    type: (t) => t.type || "",
    state: (t) => shownState(t),
    progress: (t) => (t.progress === null ? -1 : t.progress),
    items: (t) => (t.done === null ? -1 : t.done),
    rate: (t) => t.rate || 0,
    eta: (t) => (t.eta === null ? Infinity : t.eta),
    elapsed: (t) => (t.end === null ? Date.now() / 1000 + offset : t.end) - t.start,
    worker: (t) => t.worker || "",
    tags: (t) => t.tags.join(","),
    error: (t) => t.error || "",
  };
  let sortBy = null; // {key, dir}: dir 1 ascending, -1 descending
  let shared = 0; // length of the start every shown worker name shares
  const expanded = new Set(); // ids whose steps are shown under their row

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
  for (const th of $("tasks").tHead.rows[0].cells) {
    const key = th.dataset.sort;
    if (!key) continue;
    th.tabIndex = 0;
    const sort = () => {
      sortBy = sortBy && sortBy.key === key ? { key, dir: -sortBy.dir } : { key, dir: 1 };
      for (const other of $("tasks").tHead.rows[0].cells) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sortBy.dir > 0 ? "ascending" : "descending");
      schedule();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (event) => { if (event.key === "Enter") sort(); });
  }
  tbody.addEventListener("click", (event) => {
    const tr = event.target.closest("tr.task");
    if (!tr || event.target.closest("a")) return; // the id is a link to the task's page
    const id = tr.dataset.id;
    if (expanded.has(id)) expanded.delete(id); else expanded.add(id);
    schedule();
  });

  /** A task's state as shown: "stalled" when it is active but silent too long. */
  function shownState(task) {
    return task.stalled ? "stalled" : task.state;
  }
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

  // Failed and stalled tasks first (what needs someone), then active tasks, newest started
  // first; then ended ones, most recently ended first. Not by last update, as the terminal
  // view does: on a page rows that jump four times a second cannot be read or clicked.
  function order(a, b) {
    if (sortBy !== null) {
      const key = SORT_KEYS[sortBy.key];
      const x = key(a);
      const y = key(b);
      if (x !== y) return (x < y ? -1 : 1) * sortBy.dir;
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    }
    const aAlert = a.stalled || a.state === "error";
    const bAlert = b.stalled || b.state === "error";
    if (aAlert !== bAlert) return aAlert ? -1 : 1;
    const aEnded = a.end !== null;
    const bEnded = b.end !== null;
    if (aEnded !== bEnded) return aEnded ? 1 : -1;
    const diff = aEnded ? b.end - a.end : b.start - a.start;
    return diff || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  function newRow(id) {
    const tr = document.createElement("tr");
    tr.className = "task";
    tr.dataset.id = id;
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
    const shown = shownState(task);
    if (tr.values_.family !== (task.family ? task.family.text : task.parent)) {
      tr.values_.family = task.family ? task.family.text : task.parent;
      const mark = task.family ? `▸ ${task.family.text}` : task.parent ? `↳ of ${task.parent}` : "";
      tr.cells_.id.title = [task.id, mark].filter(Boolean).join("\n");
      tr.dataset.family = task.family ? "parent" : task.parent ? "child" : "";
    }
    tr.dataset.state = shown;
    setText(tr, "type", f.shortType(task.type), task.type || "");
    const state = tr.cells_.state;
    if (tr.values_.state !== shown) {
      tr.values_.state = shown;
      state.textContent = shown;
      state.className = `${f.stateClass(shown)}`;
    }
    // A task that spawned others shows its family's progress: done when all of them are.
    const measured = task.family ? { progress: task.family.progress } : task;
    const bar = tr.cells_.progress.firstChild;
    f.setProgress(bar, measured);
    bar.title = task.family ? `with the tasks it spawned: ${task.family.text}`
      : task.grew ? "the work grew: the bar went back" : f.items(task);
    const pct = f.percent(measured) + (task.grew ? " ↻" : "");
    if (bar.nextSibling.textContent !== pct) bar.nextSibling.textContent = pct;
    setText(tr, "items", f.items(task));
    setText(tr, "rate", f.rate(task.rate));
    setText(tr, "eta", f.duration(task.eta));
    setText(tr, "elapsed", f.duration(f.elapsed(task, now)));
    // What tells workers apart: the start all shown names share is cut.
    const worker = task.worker ? (shared ? `…${task.worker.slice(shared)}` : task.worker) : "";
    setText(tr, "worker", worker || f.NO_VALUE, task.worker || "");
    const tags = task.tags.join(", ");
    setText(tr, "tags", tags, tags);
    const silent = task.stalled ? `no report for ${f.duration(now - task.seen)}` : "";
    const note = task.error || silent;
    setText(tr, "error", note, note);
  }

  /** The row under a task's row that shows its steps, one bar each. */
  function stepsRow(task) {
    const tr = document.createElement("tr");
    tr.className = "steps";
    const td = document.createElement("td");
    td.colSpan = CELLS.length;
    const list = document.createElement("ul");
    for (const [name, state, done, total] of task.steps) {
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.className = "step-name";
      label.textContent = name || "progress";
      const bar = document.createElement("progress");
      f.setProgress(bar, { progress: f.stepFraction(state, done, total) });
      const detail = document.createElement("span");
      detail.className = "step-detail";
      detail.textContent = [state, f.items({ done, total })].filter(Boolean).join(" · ");
      li.append(label, bar, detail);
      list.append(li);
    }
    if (!task.steps.length) list.textContent = "this task reports no steps";
    td.append(list);
    if (task.family) {
      // Its children, each with its state and bar, and the family rolled up.
      const family = document.createElement("p");
      family.className = "family";
      family.textContent = `with the ${task.children.length} task(s) it spawned: ` +
        `${task.family.text}, ${Math.floor(task.family.progress * 100)}%, ETA ` +
        `${f.duration(task.family.eta)}`;
      const kids = document.createElement("ul");
      kids.className = "children";
      for (const id of task.children) {
        const child = tasks.get(id);
        const li = document.createElement("li");
        const link = document.createElement("a");
        link.href = `/tasks/${encodeURIComponent(id)}`;
        link.textContent = id;
        const state = document.createElement("span");
        const shown = child ? shownState(child) : "not seen yet";
        state.className = f.stateClass(shown);
        state.textContent = shown;
        const bar = document.createElement("progress");
        f.setProgress(bar, child || { progress: 0 });
        li.append(link, " ", state, " ", bar);
        if (child && child.error) {
          const error = document.createElement("span");
          error.className = "child-error";
          error.textContent = child.error;
          li.append(" ", error);
        }
        kids.append(li);
      }
      td.append(family, kids);
    }
    tr.append(td);
    return tr;
  }

  // The groups view: tasks sharing a group_id, rolled up; polled while it is open.
  const groupsView = $("groups-view");
  async function pollGroups() {
    if (!groupsView.open) return;
    try {
      const response = await fetch("/api/groups", { headers: { Accept: "application/json" } });
      if (response.ok) showGroups((await response.json()).groups);
    } finally {
      setTimeout(pollGroups, 2000);
    }
  }
  groupsView.addEventListener("toggle", () => { if (groupsView.open) pollGroups(); });

  function showGroups(groups) {
    const rows = groups.map((group) => {
      const tr = document.createElement("tr");
      const cells = [group.id, String(group.members), group.text, null, f.duration(group.eta)];
      for (const text of cells) {
        const td = document.createElement("td");
        if (text === null) {
          const bar = document.createElement("progress");
          f.setProgress(bar, group);
          const pct = document.createElement("span");
          pct.className = "pct";
          pct.textContent = f.percent(group);
          td.append(bar, pct);
        } else {
          td.textContent = text;
        }
        tr.append(td);
      }
      return tr;
    });
    $("groups").tBodies[0].replaceChildren(...rows);
    $("no-groups").hidden = groups.length > 0;
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
    shared = f.sharedStart(visible.map((task) => task.worker).filter(Boolean));
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
      if (tr.steps_) {
        tr.steps_.remove();
        tr.steps_ = null;
      }
      if (expanded.has(task.id)) {
        tr.steps_ = stepsRow(task);
        tr.after(tr.steps_);
        previous = tr.steps_;
      }
    }
    for (const [id, tr] of shown) {
      if (!keep.has(id)) {
        if (tr.steps_) tr.steps_.remove();
        tr.remove();
        shown.delete(id);
      }
    }
    $("empty").hidden = tasks.size > 0 || summary === null;
    if (summary !== null && tasks.size === 0) {
      $("empty").textContent = emptyNote(summary);
    }
    const hidden = matching.length - visible.length;
    $("hidden").textContent = hidden > 0
      ? `${f.number.format(hidden)} more matching tasks not shown (the ${MAX_ROWS} first ` +
        `of ${f.number.format(matching.length)}; ${f.number.format(tasks.size)} on the board)`
      : "";
    showSummary();
  }

  // What an empty board means: still reading the history, nothing in it, or no history.
  function emptyNote(s) {
    if (s.history && s.replaying !== null) {
      return `Reading the exchange's history (${s.history}) first… ` +
        `${Math.floor(s.replaying * 100)}%`;
    }
    if (s.history) {
      return `No task yet: the exchange's history (${s.history}) held none, and none ` +
        `reported since. Watching ${s.source}.`;
    }
    return `No task yet. Watching ${s.source}; only reports published after the dashboard ` +
      "started are seen ('streamer history enable' keeps a history that a dashboard " +
      "started later shows first).";
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
    if (s.stalled) {
      const stalled = document.createElement("b");
      stalled.className = "state-stalled";
      stalled.textContent = ` │ ${f.number.format(s.stalled)} stalled`;
      parts.push(stalled);
    }
    $("summary").replaceChildren(...parts);
    if (!s.consuming) connection("no-broker", broker(s.connection), detail(s.connection));
    else if (s.replaying !== null && s.replaying !== undefined) {
      connection("replaying", `replaying… ${Math.floor(s.replaying * 100)}%`);
    } else connection("live");
  }

  // The broker connection's state (summary.connection), e.g. "broker unreachable since
  // 12:03:04" in local time; the details (URL, attempts, last error) in the tooltip.
  const SAYS = {
    lost: "connection to the broker lost",
    unreachable: "broker unreachable",
    refused: "broker refused the credentials",
    untrusted: "broker certificate not trusted",
  };

  function broker(c) {
    if (!c || !SAYS[c.state]) return undefined;
    const since = new Date(c.since * 1000).toLocaleTimeString([], { hour12: false });
    return `${SAYS[c.state]} since ${since}`;
  }

  function detail(c) {
    if (!c) return "";
    const parts = [c.url, `attempt ${Math.max(c.attempts, 1)}`];
    if (c.error) parts.push(c.error);
    return parts.join(" — ");
  }

  function connection(status, text, title) {
    const el = $("connection");
    const shown = text || {
      live: "live",
      "no-broker": "connecting to the broker…",
      connecting: "reconnecting…",
    }[status];
    el.title = title || "";
    if (el.dataset.status === status && el.textContent === shown) return;
    el.dataset.status = status;
    el.textContent = shown;
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
