"""Folding bench/receive.py's runs into medians, same-run ratios and the acceptance checks, and
printing them as bench/throughput_report.py prints its table (kept apart from the measuring).

Medians, because one round in a few on this shared 2-core machine is hit by a neighbour;
gaps are summed, and the worst received/published is kept, because a loss in any round must
stay visible. Ratios come as the ratio of the medians and, in brackets, each round's own ratio
(both runs of a round ran within a minute or two of each other, on much the same machine).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from throughput_report import _fmt, _median, _ratio  # one copy of the table helpers

from . import RECEIVERS, STREAMER_TOOLS

CEILINGS = {"attached": "watcher", "drain": "raw"}  # what each mode's ratio column divides by
ACCEPT = {"received": 0.999, "cpu_us": 15.0, "pub_vs_watcher": 0.9, "drain_rate": 50_000}
ACCEPT_DRAIN_VS_RAW = 0.8


OTHER_LEGEND = (
    "(sys: the kernel's share of the receiver's CPU (socket reads, epoll, writes); rep/read:"
    " reports per\n batch handed over, i.e. per socket read (known for the bench's own"
    " children only); other: CPU cores\n taken by processes outside the benchmark over the"
    " measured window, median (2.00 = the whole machine).)"
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def ok(result: dict[str, Any]) -> bool:
    return "error" not in result and result.get("received") is not None


def summarize(results: list[dict[str, Any]], mode: str, names: list[str]) -> dict[str, Any]:
    """Per receiver: medians of the rates and CPU, worst received ratio, summed gaps."""
    rate_key = "publisher_rate" if mode == "attached" else "rate"
    out: dict[str, Any] = {}
    for name in names:
        runs = [r for r in results if r["mode"] == mode and r["receiver"] == name]
        good = [r for r in runs if ok(r)]
        rates = [r[rate_key] for r in good if r.get(rate_key)]
        out[name] = {
            "rounds": len(runs),
            "ok_rounds": len(good),
            "errors": [f"round {r['round']}: {r['error']}" for r in runs if not ok(r)],
            "notes": [f"round {r['round']}: {r['note']}" for r in runs if r.get("note")],
            "published": _median(r.get("published") or r.get("filled") for r in good),
            "received": _median(r["received"] for r in good),
            "received_ratio_min": min((r["received_ratio"] for r in good), default=None),
            "gaps": sum(r["gaps"] for r in good)
            if all(r["gaps"] is not None for r in good) and good
            else None,
            "cpu_us_per_report": _median(r.get("cpu_us_per_report") for r in good),
            "cpu_min": min(
                (r["cpu_us_per_report"] for r in good if r.get("cpu_us_per_report")), default=None
            ),
            "cpu_max": max(
                (r["cpu_us_per_report"] for r in good if r.get("cpu_us_per_report")), default=None
            ),
            "foreign_cores": _median((r.get("load") or {}).get("foreign_cores") for r in good),
            "sys_share": _median(
                r["cpu_sys_s"] / r["cpu_s"] for r in good if r.get("cpu_s") and "cpu_sys_s" in r
            ),
            "reports_per_batch": _median(r.get("reports_per_batch") for r in good),
            "rate": _median(rates),
            "rate_min": min(rates, default=None),
            "rate_max": max(rates, default=None),
        }
    return out


def ratios(
    results: list[dict[str, Any]], mode: str, summary: dict[str, Any], base: str
) -> dict[str, Any]:
    """Every receiver's rate over ``base``'s: of the medians, and round by round."""
    rate_key = "publisher_rate" if mode == "attached" else "rate"
    by_round = {(r["receiver"], r["round"]): r for r in results if r["mode"] == mode and ok(r)}
    rounds = sorted({r["round"] for r in results if r["mode"] == mode})
    out: dict[str, Any] = {}
    if not summary.get(base, {}).get("rate"):
        return out
    for name, s in summary.items():
        per_round = [
            _ratio(
                by_round.get((name, n), {}).get(rate_key), by_round.get((base, n), {}).get(rate_key)
            )
            for n in rounds
        ]
        out[name] = {"of_medians": _ratio(s["rate"], summary[base]["rate"]), "by_round": per_round}
    return out


def acceptance(
    attached: dict[str, Any], drain: dict[str, Any], rat: dict[str, Any]
) -> list[dict[str, Any]]:
    """The issue's checks, each with the numbers it was decided on (None: not measured)."""
    checks: list[dict[str, Any]] = []
    for name in STREAMER_TOOLS:
        s = attached.get(name)
        if s is None or not s["ok_rounds"]:
            continue
        worst = s["received_ratio_min"]
        checks.append(
            {
                "check": f"{name}: received >= 99.9% of published (worst round)",
                "value": worst,
                "shown": _fmt(worst and worst * 100, ".3f") + "%",
                "pass": worst is not None and worst >= ACCEPT["received"],
            }
        )
        cpu = s["cpu_us_per_report"]
        checks.append(
            {
                "check": f"{name}: receiver CPU <= 15 us/report (median)",
                "value": cpu,
                "shown": _fmt(cpu, ".1f") + " us",
                "pass": cpu is not None and cpu <= ACCEPT["cpu_us"],
            }
        )
    pub = rat.get("attached", {}).get("dashboard")
    if pub is not None:
        value = pub["of_medians"]
        checks.append(
            {
                "check": "publisher rate, dashboard attached / harness watcher attached >= 0.9",
                "value": value,
                "shown": f"x{_fmt(value, '.2f')} ["
                + " ".join(_fmt(x, ".2f") for x in pub["by_round"])
                + "]",
                "pass": value is not None and value >= ACCEPT["pub_vs_watcher"],
            }
        )
    d = drain.get("dashboard")
    if d is not None and d["ok_rounds"]:
        vs_raw = rat.get("drain", {}).get("dashboard", {}).get("of_medians")
        rate = d["rate"]
        checks.append(
            {
                "check": "drain: dashboard >= 50,000 reports/s, or >= 0.8 x raw reader",
                "value": rate,
                "shown": f"{_fmt(rate)}/s, x{_fmt(vs_raw, '.2f')} raw",
                "pass": bool(rate and rate >= ACCEPT["drain_rate"])
                or bool(vs_raw and vs_raw >= ACCEPT_DRAIN_VS_RAW),
            }
        )
    return checks


# --------------------------------------------------------------------------- printing


def _print(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for i, line in enumerate([header, *rows]):
        cells = [
            str(c).ljust(w) if j in (0, len(header) - 1) else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _notes(s: dict[str, Any]) -> str:
    parts = [e if len(e) <= 90 else e[:87] + "..." for e in s["errors"]] + s["notes"]
    return "; ".join(parts)


def _spread(lo: float | None, hi: float | None, spec: str, n: int) -> str:
    return f"{_fmt(lo, spec)}-{_fmt(hi, spec)}" if n > 1 else "-"


def print_attached(summary: dict[str, Any], rat: dict[str, Any]) -> None:
    header = (
        "receiver",
        "rounds",
        "published",
        "received",
        "recv/pub min",
        "gaps",
        "CPU us/rep",
        "min-max",
        "sys",
        "rep/read",
        "pub rate/s",
        "min-max",
        "x watcher",
        "other",
        "notes",
    )
    rows = []
    for name, s in summary.items():
        n = s["ok_rounds"]
        ran = n if n == s["rounds"] else f"{n}/{s['rounds']}"
        ratio = s["received_ratio_min"]
        rows.append(
            (
                name,
                ran,
                _fmt(s["published"]),
                _fmt(s["received"]),
                "-" if ratio is None else f"{ratio * 100:.3f}%",
                _fmt(s["gaps"]),
                _fmt(s["cpu_us_per_report"], ".1f"),
                _spread(s["cpu_min"], s["cpu_max"], ".1f", n),
                _pct(s["sys_share"]),
                _fmt(s["reports_per_batch"], ".1f"),
                _fmt(s["rate"]),
                _spread(s["rate_min"], s["rate_max"], ",.0f", n),
                _fmt(rat.get(name, {}).get("of_medians"), ".2f"),
                _fmt(s["foreign_cores"], ".2f"),
                _notes(s),
            )
        )
    _print(header, rows)
    print(OTHER_LEGEND)


def print_drain(summary: dict[str, Any], rat: dict[str, Any]) -> None:
    header = (
        "receiver",
        "rounds",
        "in queue",
        "received",
        "reports/s",
        "min-max",
        "CPU us/rep",
        "min-max",
        "sys",
        "rep/read",
        "x raw",
        "other",
        "notes",
    )
    rows = []
    for name, s in summary.items():
        n = s["ok_rounds"]
        ran = n if n == s["rounds"] else f"{n}/{s['rounds']}"
        rows.append(
            (
                name,
                ran,
                _fmt(s["published"]),
                _fmt(s["received"]),
                _fmt(s["rate"]),
                _spread(s["rate_min"], s["rate_max"], ",.0f", n),
                _fmt(s["cpu_us_per_report"], ".1f"),
                _spread(s["cpu_min"], s["cpu_max"], ".1f", n),
                _pct(s["sys_share"]),
                _fmt(s["reports_per_batch"], ".1f"),
                _fmt(rat.get(name, {}).get("of_medians"), ".2f"),
                _fmt(s["foreign_cores"], ".2f"),
                _notes(s),
            )
        )
    _print(header, rows)
    print(OTHER_LEGEND)


def print_ratios(rat: dict[str, Any]) -> None:
    lines = []
    for mode, base, what in (
        ("attached", "watcher", "publisher rate"),
        ("drain", "raw", "drain rate"),
    ):
        r = rat.get(mode, {}).get("dashboard")
        if r is None:
            continue
        rounds = " ".join(_fmt(x, ".2f") for x in r["by_round"])
        lines.append(
            f"  {what:<15} dashboard / {base:<8} x{_fmt(r['of_medians'], '.2f')}  [{rounds}]"
        )
    if lines:
        print("\nratios, of the medians [each round's own]:")
        print("\n".join(lines))


def print_versions(results: list[dict[str, Any]], origin: dict[str, Any]) -> None:
    """Which code was measured; a warning when the runs did not all import the same."""
    where = f"commit {origin.get('commit')}" + (
        " plus uncommitted changes" if origin.get("uncommitted_changes") else ""
    )
    where += " (a copy taken at the start)" if origin.get("snapshot") else " (the working tree)"
    seen: dict[str, list[str]] = {}
    for r in results:
        seen.setdefault(r.get("code") or "?", []).append(
            f"{r['mode']} {r['receiver']} r{r['round']}"
        )
    if len(seen) <= 1:
        print(f"\ncode: {where}; every run imported source digest {next(iter(seen), '-')}")
        return
    print(f"\nWARNING: {where}, but the runs imported different code (changed meanwhile):")
    for code, runs in seen.items():
        print(f"  digest {code}: {len(runs)} runs, first {runs[0]}, last {runs[-1]}")


def print_checks(checks: list[dict[str, Any]]) -> None:
    if not checks:
        return
    print("\nacceptance (the issue's numbers):")
    width = max(len(c["check"]) for c in checks)
    for c in checks:
        verdict = "PASS" if c["pass"] else "FAIL"
        print(f"  {verdict}  {c['check']:<{width}}  {c['shown']}")


def print_legend(names: Iterable[str]) -> None:
    print("\nreceivers:")
    for name in names:
        print(f"  {name:<13} {RECEIVERS[name]}")
