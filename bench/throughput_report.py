"""Folding bench/throughput.py's rounds into medians and ratios and printing them, kept apart
from running the clients so the output can change without touching the measuring."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

RATIO_BASELINES = ("aio-pika-pipelined", "aiormq-pipelined", "blaster")


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------- rounds


def _median(values: Iterable[float | None]) -> float | None:
    """Median of the values present (a round may lack, say, broker CPU)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def succeeded(result: dict[str, Any]) -> bool:
    """The run produced numbers (it may still carry an error note, e.g. a failed flush)."""
    return "confirmed" in result


# Per-round fields folded by median, and counters folded by sum: a drop or nack in any
# round must stay visible, a median would hide it.
MEDIAN_FIELDS = (
    "confirmed",
    "attempted",
    "elapsed_s",
    "msgs_per_s",
    "cpu_us_per_msg",
    "broker_cpu_us_per_msg",
    "latency_p50_ms",
    "latency_p99_ms",
    "reports_per_s",
)
SUM_FIELDS = ("nacked", "dropped", "coalesced", "errors")


def summarize_client(
    name: str, runs: list[dict[str, Any]], *, round_1_only: bool
) -> dict[str, Any]:
    """Fold one client's rounds into one record: medians, the msgs/s spread, summed drops.

    Medians, not means: on this shared 2-core box one round in a few gets hit by a
    neighbour, and a mean would drag every column toward that round.
    """
    ok = [r for r in runs if succeeded(r)]
    summary: dict[str, Any] = {
        "client": name,
        "rounds": len(runs),
        "ok_rounds": len(ok),
        "round_1_only": round_1_only,
        "unavailable": next((r["unavailable"] for r in runs if "unavailable" in r), None),
        "failures": {},  # error -> rounds it happened in
    }
    for r in runs:
        if not succeeded(r) and "unavailable" not in r:
            summary["failures"].setdefault(str(r.get("error")), []).append(r["round"])
    if not ok:
        return summary
    rates = [r["msgs_per_s"] for r in ok]
    summary.update({f: _median(r.get(f) for r in ok) for f in MEDIAN_FIELDS})
    summary.update({f: sum(r.get(f) or 0 for r in ok) for f in SUM_FIELDS})
    summary.update(
        msgs_per_s_min=min(rates),
        msgs_per_s_max=max(rates),
        msgs_per_s_rounds=rates,
        planned=ok[0]["planned"],
        capped=any(r.get("capped") for r in ok),
        latency_basis=ok[0].get("latency_basis"),
        error=next((f"round {r['round']}: {r['error']}" for r in ok if r.get("error")), None),
    )
    return summary


def compute_ratios(
    summaries: dict[str, dict[str, Any]], results: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """streamer / baseline: the ratio of the medians, and the same ratio round by round.

    The per-round ratios are the spread a reader should judge the medians by: both
    clients of a round ran minutes apart at most, so they saw much the same machine.
    """
    streamer = summaries.get("streamer")
    if streamer is None or not streamer.get("msgs_per_s"):
        return {}
    by_round = {(r["client"], r["round"]): r for r in results if succeeded(r)}
    rounds = sorted({r["round"] for r in results if r["client"] == "streamer"})
    ratios: dict[str, dict[str, Any]] = {}
    for base in RATIO_BASELINES:
        other = summaries.get(base)
        if other is None or not other.get("msgs_per_s"):
            continue
        per_round: dict[str, list[float | None]] = {"msgs_per_s": [], "cpu_per_msg": []}
        for n in rounds:
            s, o = by_round.get(("streamer", n), {}), by_round.get((base, n), {})
            per_round["msgs_per_s"].append(_ratio(s.get("msgs_per_s"), o.get("msgs_per_s")))
            per_round["cpu_per_msg"].append(
                _ratio(s.get("cpu_us_per_msg"), o.get("cpu_us_per_msg"))
            )
        ratios[base] = {
            "msgs_per_s": _ratio(streamer["msgs_per_s"], other["msgs_per_s"]),
            "cpu_per_msg": _ratio(streamer["cpu_us_per_msg"], other["cpu_us_per_msg"]),
            "rounds": rounds,
            "msgs_per_s_by_round": per_round["msgs_per_s"],
            "cpu_per_msg_by_round": per_round["cpu_per_msg"],
        }
    return ratios


# --------------------------------------------------------------------------- output


def _notes(s: dict[str, Any]) -> str:
    notes = []
    if s["unavailable"]:
        notes.append(f"unavailable: {s['unavailable']}")
    for error, rounds in s["failures"].items():
        short = error if len(error) <= 80 else error[:77] + "..."  # in full above and in JSON
        notes.append(f"failed in round {', '.join(map(str, rounds))}: {short}")
    if s["round_1_only"]:
        notes.append("round 1 only")
    if s.get("capped"):
        notes.append(f"time-capped: {s['attempted']:,.0f}/{s['planned']:,}")
    if s.get("coalesced"):
        notes.append(f"{s['coalesced']:,} coalesced, {s['reports_per_s']:,.0f} reports/s in")
    if s.get("latency_basis") not in (None, "per-message"):
        notes.append(f"latency {s['latency_basis']}")
    if s.get("errors"):
        notes.append(f"{s['errors']} errors, first {s['error']}")
    elif s.get("error"):
        notes.append(str(s["error"]))
    return "; ".join(notes)


def print_table(summaries: list[dict[str, Any]], *, time_cap: float) -> None:
    """Plain aligned table, one row per client, every column folded over its rounds."""
    header = (
        "client",
        "rounds",
        "confirmed",
        "elapsed s",
        "msgs/s",
        "min-max",
        "CPU us/msg",
        "broker us/msg",
        "p50 ms",
        "p99 ms",
        "nack",
        "drop",
        "notes",
    )
    rows = []
    for s in summaries:
        ran = s["ok_rounds"] if s["ok_rounds"] == s["rounds"] else f"{s['ok_rounds']}/{s['rounds']}"
        if not s["ok_rounds"]:
            rows.append((s["client"], ran, *["-"] * (len(header) - 3), _notes(s)))
            continue
        spread = "-"  # a spread of one round says nothing
        if s["ok_rounds"] > 1:
            spread = f"{s['msgs_per_s_min']:,.0f}-{s['msgs_per_s_max']:,.0f}"
        rows.append(
            (
                s["client"],
                ran,
                _fmt(s["confirmed"]),
                _fmt(s["elapsed_s"], ".2f"),
                _fmt(s["msgs_per_s"]),
                spread,
                _fmt(s["cpu_us_per_msg"], ",.1f"),
                _fmt(s["broker_cpu_us_per_msg"], ",.1f"),
                _fmt(s["latency_p50_ms"], ".2f"),
                _fmt(s["latency_p99_ms"], ".2f"),
                _fmt(s["nacked"]),
                _fmt(s["dropped"]),
                _notes(s),
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for i, line in enumerate([header, *rows]):
        cells = [
            str(c).ljust(w) if j in (0, len(header) - 1) else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "\nmsgs/s is the median over the rounds, min-max its spread; the CPU, broker and"
        "\nlatency columns are medians too; nack and drop are summed over the rounds."
    )
    once = [s["client"] for s in summaries if s["round_1_only"]]
    if once:
        print(
            f"{', '.join(once)}: one message at a time and time-capped at {time_cap:g} s,"
            "\nso they ran in round 1 only (--repeat-all repeats them)."
        )


def print_ratios(summaries: dict[str, dict[str, Any]], ratios: dict[str, dict[str, Any]]) -> None:
    """streamer against the baselines, when both ran."""
    if not summaries.get("streamer", {}).get("ok_rounds"):
        print("\nratios: streamer did not run, nothing to compare")
        return
    if not ratios:
        print(f"\nratios: no baseline ({', '.join(RATIO_BASELINES)}) in this run")
        return
    multi = any(len(r["rounds"]) > 1 for r in ratios.values())
    print(
        "\nratios, streamer / baseline, of the medians"
        + (" (each round's own ratio in brackets):" if multi else ":")
    )
    for base, r in ratios.items():
        speed = f"msgs/s x{_fmt(r['msgs_per_s'], '.2f')}"
        cpu = f"CPU/msg x{_fmt(r['cpu_per_msg'], '.2f')}"
        if multi:
            speed += " [" + " ".join(_fmt(x, ".2f") for x in r["msgs_per_s_by_round"]) + "]"
            cpu += " [" + " ".join(_fmt(x, ".2f") for x in r["cpu_per_msg_by_round"]) + "]"
        print(f"  vs {base:<20} {speed}   {cpu}")
