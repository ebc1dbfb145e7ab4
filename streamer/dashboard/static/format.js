// Formatting shared by the dashboard and the task page: the same rules as the terminal view
// (streamer/watch.py), so a task reads the same everywhere. Values come from the server as
// numbers and raw strings; everything here returns plain text for textContent.
"use strict";

(() => {
  const NO_VALUE = "—";
  const TYPE_WIDTH = 15;
  const number = new Intl.NumberFormat("en-US");
  const TERMINAL = new Set(["finished", "error", "canceled", "skipped"]);
  const STATES = new Set([
    "waiting", "accepted", "running", "suspended", "skipped", "finished", "error", "canceled",
    "stalled",
  ]);
  const DONE_STEPS = new Set(["finished", "completed", "complete", "done", "skipped"]);
  // Local time with its zone (the browser's), to the millisecond: "14:03:07.215 CET".
  const CLOCK = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
    hour12: false, timeZoneName: "short",
  });

  function clock(seconds) {
    return CLOCK.format(new Date(seconds * 1000));
  }

  /**
   * How long the start is that all `names` share, cut after a separator (as
   * streamer/view.py's distinct_names): 0 when under 4 characters or fewer than two names.
   */
  function sharedStart(names) {
    if (new Set(names).size < 2) return 0;
    let common = names.reduce((a, b) => {
      let n = 0;
      while (n < a.length && n < b.length && a[n] === b[n]) n += 1;
      return a.slice(0, n);
    }).length;
    while (common && !"-_.@:/ ".includes(names[0][common - 1])) common -= 1;
    return common < 4 ? 0 : common;
  }

  /** A step's share done, as streamer/progress.py counts it (finished: 1; no total: 0). */
  function stepFraction(state, done, total) {
    if (state && DONE_STEPS.has(state.toLowerCase())) return 1;
    if (done === null || !total) return 0;
    return Math.min(done / total, 1);
  }

  /** Compact h/m/s: an ETA or elapsed time must fit a narrow column. */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return NO_VALUE;
    const s = Math.max(Math.round(seconds), 0);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 100 * 3600) {
      return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    }
    return `${Math.floor(s / 86400)}d`;
  }

  function rate(value) {
    if (!value) return NO_VALUE;
    return value < 100 ? `${value.toFixed(1)}/s` : `${number.format(Math.round(value))}/s`;
  }

  function items(task) {
    if (task.done === null || task.total === null) return NO_VALUE;
    return `${number.format(task.done)}/${number.format(task.total)}`;
  }

  /** The last dotted words that fit: `a.b.repo.sync.sync` shows as `repo.sync.sync`. */
  function shortType(type) {
    if (!type) return NO_VALUE;
    const words = type.split(".");
    let kept = words.pop();
    while (words.length && words[words.length - 1].length + 1 + kept.length <= TYPE_WIDTH) {
      kept = `${words.pop()}.${kept}`;
    }
    return kept.length <= TYPE_WIDTH ? kept : `${kept.slice(0, TYPE_WIDTH - 1)}…`;
  }

  function elapsed(task, now) {
    return Math.max((task.end === null ? now : task.end) - task.start, 0);
  }

  function percent(task) {
    return task.progress === null ? "?" : `${Math.floor(task.progress * 100)}%`;
  }

  /** A CSS class for a state, only for the known ones (the state is a task's string). */
  function stateClass(state) {
    return STATES.has(state) ? `state state-${state}` : "state";
  }

  /** Show progress on a <progress>: indeterminate when the task sent no counters. */
  function setProgress(bar, task) {
    if (task.progress === null) {
      bar.removeAttribute("value");
    } else {
      bar.max = 1;
      bar.value = Math.min(Math.max(task.progress, 0), 1);
    }
  }

  window.streamerFormat = {
    NO_VALUE, TERMINAL, duration, rate, items, shortType, elapsed, percent, stateClass, setProgress,
    number, clock, stepFraction, sharedStart,
  };
})();
