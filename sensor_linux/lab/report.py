"""The overhead lab's report: Markdown, CSV and JSON tables, ratios, and a PNG plot.

A row is **saturated** when the load generator fell more than 5 % short of the requested rate
or the mode lost events: the machine (or the collector) could not keep up, processes waited, and
CPU figures then describe a stalled system rather than a cost. Ratios leave such rows out.

"Total" CPU is what a mode costs the machine beyond the baseline: its collector processes,
kauditd, and what the watched processes (the load generator's children) spent above the
``none`` mode at the same rate, since audit record formatting and BPF programs run in the
exec'ing task. BPF run time is shown on its own but is already inside that workload figure.

The workload figure moves by several points from run to run on a shared machine (the watched
processes' CPU against the ``none`` run's), so the comparisons also give a **steady** ratio:
what is measured for the collection itself (collector processes, kauditd, and our BPF
programs' run time), without the workload excess. It leaves out what audit costs in the
exec'ing task (record formatting), so it is conservative for the eBPF modes against auditd.

With several rounds (``--rounds``) every row, comparison and process figure is given per round
(each round's totals against that round's ``none``), and a last table sums each comparison up:
its median over the rounds, the range, and the goal issue 14 set for it (docs/overhead.md). A
single run of a pair moves by a fifth or more on a shared VM; the median of rounds measured in
alternating order is the figure to judge.

Each collector process's own CPU is also given per exec (user and system microseconds per
exec started), so that a comparison of two plugins behind auditd shows which process the
difference is in: auditd does the same work behind either.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from sensor_linux.lab.overhead import Measurement, as_dicts

COLUMNS = [("mode", "mode"), ("rate", "rate/s"), ("achieved_rate", "achieved/s"),
           ("started", "started"), ("received", "received"), ("lost", "lost"),
           ("audit_lost", "audit lost"), ("collector_cpu_pct", "collectors %"),
           ("kauditd_cpu_pct", "kauditd %"), ("workload_excess_pct", "workload +%"),
           ("total_cpu_pct", "total %"), ("bpf_run_pct", "BPF %"),
           ("bpf_ns_per_run", "BPF ns/run"), ("latency_p50_us", "p50 µs"),
           ("latency_p99_us", "p99 µs"), ("drain_s", "drain s"), ("saturated", "saturated")]
SATURATION = 0.95

# (what is compared, mode, against mode, the goal for its total ratio): the comparisons the lab
# exists to make, and the most each may cost against its peer (issue 14's targets).
RATIOS = [("our eBPF mode vs auditd alone", "ebpf", "auditd-raw", 0.5),
          ("our hybrid mode vs auditd alone", "hybrid", "auditd-raw", 0.5),
          ("our plugin vs LAUREL (both behind auditd)", "auditd+ttpsensor", "auditd+laurel",
           1.0),
          ("our netlink mode vs auditd with LAUREL", "netlink", "auditd+laurel", 0.7)]


def rows(results: list[Measurement]) -> list[dict[str, Any]]:
    """Result dictionaries with the derived workload-excess and total columns."""
    baseline = {(r.round, r.rate): r for r in results if r.mode == "none" and r.error is None}
    out = []
    for row in as_dicts(results):
        row["saturated"] = row["error"] is None and (
            row["achieved_rate"] < SATURATION * row["rate"] or bool(row["lost"]))
        base = baseline.get((row["round"], row["rate"]))
        if row["error"] is None and base is not None:
            row["workload_excess_pct"] = row["workload_cpu_pct"] - base.workload_cpu_pct
            row["total_cpu_pct"] = (row["collector_cpu_pct"] + row["kauditd_cpu_pct"]
                                    + row["workload_excess_pct"])
        else:
            row["workload_excess_pct"] = row["total_cpu_pct"] = None
        out.append(row)
    return out


def ratios(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per compared pair, round and rate: total and collector CPU of one mode over the
    other's, both of the same round."""
    found = []
    by_key = {(r["round"], r["mode"], r["rate"]): r for r in table}
    for label, mode, peer, _ in RATIOS:
        for round_, rate in sorted({(r["round"], r["rate"]) for r in table}):
            mine, theirs = by_key.get((round_, mode, rate)), by_key.get((round_, peer, rate))
            if not mine or not theirs or mine["total_cpu_pct"] is None \
                    or theirs["total_cpu_pct"] is None or mine["saturated"] \
                    or theirs["saturated"]:
                continue
            found.append({
                "comparison": label, "round": round_, "rate": rate, "mode": mode, "peer": peer,
                "total_pct": mine["total_cpu_pct"], "peer_total_pct": theirs["total_cpu_pct"],
                "total_ratio": _ratio(mine["total_cpu_pct"], theirs["total_cpu_pct"]),
                "collector_ratio": _ratio(mine["collector_cpu_pct"],
                                          theirs["collector_cpu_pct"]),
                "steady_ratio": _ratio(_steady(mine), _steady(theirs))})
    return found


def summary(compared: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per compared pair and rate, over the rounds that gave a figure: the median, lowest and
    highest total and steady ratio, the goal, and whether each median is within it (the
    total is the goal's measure; the steady ratio leaves out the workload excess, which
    moves a total ratio by tenths between rounds, see the module's docstring)."""
    found = []
    for label, _, _, goal in RATIOS:
        for rate in sorted({c["rate"] for c in compared if c["comparison"] == label}):
            mine = [c for c in compared if c["comparison"] == label and c["rate"] == rate]
            item: dict[str, Any] = {"comparison": label, "rate": rate, "goal": goal}
            for kind in ("total", "steady"):
                values = [c[f"{kind}_ratio"] for c in mine if c[f"{kind}_ratio"] is not None]
                median = statistics.median(values) if values else None
                item.update({f"{kind}_median": median, f"{kind}_min": min(values, default=None),
                             f"{kind}_max": max(values, default=None),
                             f"{kind}_within_goal": None if median is None else median <= goal})
                if kind == "total":
                    item["rounds"] = len(values)
            found.append(item)
    return found


def processes(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per measured row and collector process: its user and system CPU in microseconds per
    exec the load generator achieved (a CPU percentage times 10,000 over the rate), and its
    resident memory after the load and at its peak so far (None in results written before the
    lab read memory)."""
    found = []
    for row in table:
        if row["error"] or not row["achieved_rate"]:
            continue
        per_exec = 1e4 / row["achieved_rate"]
        for name, cpu in sorted(row["collectors"].items()):
            memory = row.get("memory_mib", {}).get(name, {})
            user, system = cpu["user"] * per_exec, cpu["system"] * per_exec
            found.append({"mode": row["mode"], "round": row["round"], "rate": row["rate"],
                          "process": name,
                          "user_us_per_exec": user, "system_us_per_exec": system,
                          "us_per_exec": user + system,
                          "rss_mib": memory.get("rss"), "peak_rss_mib": memory.get("peak"),
                          "saturated": row["saturated"]})
    return found


def _steady(row: dict[str, Any]) -> float:
    """Collectors, kauditd and BPF programs: the measured cost without the workload excess."""
    return float(row["collector_cpu_pct"] + row["kauditd_cpu_pct"] + row["bpf_run_pct"])


def _ratio(a: float, b: float) -> float | None:
    """a over b; None when either is no cost (a total below zero: the watched processes
    spent less than in the ``none`` run, by more than the mode cost; noise, not a figure)."""
    return a / b if b > 0 and a >= 0 else None


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return str(value)


def markdown(table: list[dict[str, Any]], compared: list[dict[str, Any]],
             per_process: list[dict[str, Any]] | None = None,
             summed: list[dict[str, Any]] | None = None) -> str:
    """The report's tables; each row's round first when there was more than one."""
    rounds = len({row["round"] for row in table}) > 1

    def first(row: dict[str, Any]) -> list[str]:
        return [str(row["round"])] if rounds else []

    head = ["round"] if rounds else []
    lines = _table(head + [title for _, title in COLUMNS],
                   [first(row) + ([row["mode"], str(row["rate"]),
                                   f"failed: {row['error'].splitlines()[0][:120]}"]
                                  if row["error"] else [_cell(row[key]) for key, _ in COLUMNS])
                    for row in table])
    if compared:
        lines += ["", *_table(head + ["comparison", "rate/s", "total %", "peer total %",
                                      "total ratio", "collector ratio", "steady ratio"],
                              [first(c) + [c["comparison"], str(c["rate"]),
                                           _cell(c["total_pct"]), _cell(c["peer_total_pct"]),
                                           _ratio_cell(c["total_ratio"]),
                                           _ratio_cell(c["collector_ratio"]),
                                           _ratio_cell(c["steady_ratio"])]
                               for c in compared])]
    if per_process:
        lines += ["", *_table(head + ["mode", "rate/s", "process", "user µs/exec",
                                      "system µs/exec", "µs/exec", "RSS MiB",
                                      "peak RSS MiB", "saturated"],
                              [first(p) + [p["mode"], str(p["rate"]), p["process"],
                                           _cell(p["user_us_per_exec"]),
                                           _cell(p["system_us_per_exec"]),
                                           _cell(p["us_per_exec"]),
                                           _cell(p["rss_mib"]), _cell(p["peak_rss_mib"]),
                                           _cell(p["saturated"])]
                               for p in per_process])]
    if summed and rounds:
        lines += ["", *_table(["comparison", "rate/s", "rounds", "total ratio: median",
                               "lowest–highest", "steady ratio: median", "lowest–highest",
                               "goal", "median within goal: total / steady"],
                              [[s["comparison"], str(s["rate"]), str(s["rounds"]),
                                _ratio_cell(s["total_median"]),
                                _range_cell(s["total_min"], s["total_max"]),
                                _ratio_cell(s["steady_median"]),
                                _range_cell(s["steady_min"], s["steady_max"]),
                                f"≤ {s['goal']:.2f}×",
                                f"{_verdict(s['total_within_goal'])} / "
                                f"{_verdict(s['steady_within_goal'])}"]
                               for s in summed])]
    return "\n".join(lines) + "\n"


def _table(titles: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines (a failed run's row has fewer cells)."""
    return ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _ratio_cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _verdict(within: bool | None) -> str:
    return "–" if within is None else "yes" if within else "no"


def _range_cell(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"{low:.2f}–{high:.2f}×"


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    keys = ["round", *(key for key, _ in COLUMNS), "window_s", "workload_cpu_pct",
            "loadgen_cpu_pct", "ours", "error", "collectors", "memory_mib"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in table:
            writer.writerow(dict(row, collectors=json.dumps(row["collectors"]),
                                 memory_mib=json.dumps(row.get("memory_mib", {}))))


def plot(path: Path, table: list[dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    figure, (total_axis, collector_axis) = plt.subplots(1, 2, figsize=(13, 5))
    modes = list(dict.fromkeys(r["mode"] for r in table))
    for index, mode in enumerate(modes):
        measured = [r for r in table if r["mode"] == mode and r["error"] is None]
        if not measured:
            continue
        style = {"color": f"C{index}", "linestyle": "-" if measured[0]["ours"] else "--",
                 "marker": "o" if measured[0]["ours"] else "s"}
        for axis, value in ((total_axis, lambda r: r["total_cpu_pct"]),
                            (collector_axis, lambda r: r["collector_cpu_pct"]
                             + r["kauditd_cpu_pct"])):
            if axis is total_axis and mode == "none":
                continue  # the baseline of "total" is zero by definition
            kept = [r for r in measured if not r["saturated"] and value(r) is not None]
            stalled = [(r["achieved_rate"], value(r)) for r in measured
                       if r["saturated"] and value(r) is not None]
            # One point per rate: the median over the rounds (each round's own as a dot).
            line = [(statistics.median(r["achieved_rate"] for r in kept if r["rate"] == rate),
                     statistics.median(value(r) for r in kept if r["rate"] == rate))
                    for rate in sorted({r["rate"] for r in kept})]
            axis.plot([p[0] for p in line], [p[1] for p in line], label=mode, **style)
            if len(kept) > len(line):
                axis.plot([r["achieved_rate"] for r in kept], [value(r) for r in kept], ".",
                          color=style["color"], alpha=0.5)
            if stalled:  # the collector or the machine could not keep up: not a cost figure
                axis.plot([p[0] for p in stalled], [p[1] for p in stalled], "x",
                          color=style["color"], markersize=9)
    total_axis.set_title("Total cost above the baseline\n(collectors + kauditd + workload excess)")
    collector_axis.set_title("Collector processes + kauditd")
    for axis in (total_axis, collector_axis):
        axis.set_xlabel("execs per second (achieved)")
        axis.set_ylabel("% of one CPU")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("ttpsensor overhead lab: CPU against exec rate (solid: ttpsensor modes; "
                    "x: saturated, not a cost)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out: Path, results: list[Measurement], command: str,
                 settings: dict[str, Any], host: str = "") -> dict[str, Path]:
    """results.json, results.csv, results.md and cpu.png in ``out``; returns their paths.
    ``host``: what was measured of the host (its pages, its interpreter), for results.md."""
    out.mkdir(parents=True, exist_ok=True)
    table = rows(results)
    compared = ratios(table)
    per_process = processes(table)
    summed = summary(compared)
    paths = {"json": out / "results.json", "csv": out / "results.csv",
             "markdown": out / "results.md", "png": out / "cpu.png"}
    paths["json"].write_text(json.dumps({"command": command, "settings": settings,
                                         "results": table, "ratios": compared,
                                         "processes": per_process, "summary": summed},
                                        indent=1))
    write_csv(paths["csv"], table)
    paths["markdown"].write_text(f"Command: `{command}`\n\n"
                                 + (f"{host}\n\n" if host else "")
                                 + markdown(table, compared, per_process, summed))
    plot(paths["png"], table)
    return paths
