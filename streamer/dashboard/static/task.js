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

  function clock(seconds) {
    return new Date(seconds * 1000).toISOString().slice(11, 23);
  }

  function show(data) {
    const task = data.task;
    $("missing").hidden = true;
    $("task").hidden = false;
    $("task").dataset.state = task.state;
    const state = $("state");
    state.textContent = task.state;
    state.className = f.stateClass(task.state);
    f.setProgress($("bar"), task);
    $("percent").textContent = `${f.percent(task)} (${f.items(task)})`;
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
    const rows = data.history.slice().reverse().map((entry) => {
      const tr = document.createElement("tr");
      const latency = entry.latency === null ? f.NO_VALUE : `${(entry.latency * 1000).toFixed(1)} ms`;
      tr.append(
        cell(clock(entry.at)), cell(String(entry.seq), true), cell(entry.state),
        cell(f.items(entry), true), cell(latency, true),
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
