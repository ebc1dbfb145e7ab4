// One task: its current state and its recent reports, polled once a second from
// /api/tasks/<id> until it ends. Every task string goes in with textContent, never as markup.
"use strict";

(() => {
  const f = window.streamerFormat;
  const $ = (id) => document.getElementById(id);
  const taskId = decodeURIComponent(location.pathname.slice("/tasks/".length));
  const api = `/api/tasks/${encodeURIComponent(taskId)}`;
  $("task-id").textContent = taskId;
  document.title = `${taskId} · streamer dashboard`;

  function cell(text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    return td;
  }


  function show(data) {
    const task = data.task;
    $("missing").hidden = true;
    $("task").hidden = false;
    $("task").dataset.state = task.state;
    const state = $("state");
    const shown = task.stalled ? "stalled" : task.state;
    state.textContent = shown;
    state.className = f.stateClass(shown);
    f.setProgress($("bar"), task);
    $("percent").textContent =
      `${f.percent(task)} (${f.items(task)})${task.grew ? " ↻ the work grew" : ""}`;
    $("type").textContent = task.type || f.NO_VALUE;
    $("items").textContent = f.items(task);
    $("rate").textContent = f.rate(task.rate);
    $("eta").textContent = f.duration(task.eta);
    $("elapsed").textContent = f.duration(f.elapsed(task, data.now));
    $("worker").textContent = task.worker || f.NO_VALUE;
    $("tags").textContent = task.tags.length ? task.tags.join(", ") : f.NO_VALUE;
    $("seq").textContent = String(task.seq);
    $("gaps").textContent = String(task.gaps);
    $("error").textContent = task.error || f.NO_VALUE;
    const steps = task.steps.map(([name, stepState, done, total]) => {
      const tr = document.createElement("tr");
      const bar = document.createElement("progress");
      f.setProgress(bar, { progress: f.stepFraction(stepState, done, total) });
      const barCell = document.createElement("td");
      barCell.append(bar);
      tr.append(cell(name || "progress"), cell(stepState || f.NO_VALUE), barCell,
        cell(f.items({ done, total }), true));
      return tr;
    });
    $("steps").tBodies[0].replaceChildren(...steps);
    $("no-steps").hidden = task.steps.length > 0;
    // One line per run of reports in one state (a state change starts the next), newest first.
    const rows = data.history.slice().reverse().map((entry) => {
      const tr = document.createElement("tr");
      const latency = entry.latency === null ? f.NO_VALUE : `${(entry.latency * 1000).toFixed(1)} ms`;
      const seqs = entry.first_seq === entry.seq ? String(entry.seq) : `${entry.first_seq}–${entry.seq}`;
      const when = entry.reports > 1 ? `${f.clock(entry.first)} – ${f.clock(entry.at)}` : f.clock(entry.at);
      tr.append(
        cell(when), cell(entry.step ? `${entry.state} · ${entry.step}` : entry.state),
        cell(seqs, true), cell(f.number.format(entry.reports), true),
        cell(latency, true),
      );
      return tr;
    });
    $("history").tBodies[0].replaceChildren(...rows);
    $("report").textContent = JSON.stringify(data.report, null, 2);
    return f.TERMINAL.has(task.state);
  }

  async function poll() {
    let delay = 1000;
    try {
      const response = await fetch(api, { headers: { Accept: "application/json" } });
      const connection = $("connection");
      if (response.status === 404) {
        $("task").hidden = true;
        $("missing").hidden = false;
        $("missing").textContent =
          "This task is not on the board: never seen since the dashboard started, or evicted.";
        connection.dataset.status = "live";
        connection.textContent = "waiting for it…";
        delay = 2000;
      } else if (response.ok) {
        const ended = show(await response.json());
        connection.dataset.status = "live";
        connection.textContent = ended ? "ended" : "live";
        if (ended) return;
      } else {
        connection.dataset.status = "connecting";
        connection.textContent = `error ${response.status}`;
      }
    } catch (error) {
      $("connection").dataset.status = "connecting";
      $("connection").textContent = "reconnecting…";
    }
    setTimeout(poll, delay);
  }

  poll();
})();
