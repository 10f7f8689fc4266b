"""RESULTS.md: machine, versions, configuration, conditions, then every section."""

from __future__ import annotations

from collections import defaultdict

from bench.figures import verdict
from bench.kit import Findings, Plan
from bench.system import CpuShare


def table(rows: dict[str, str]) -> str:
    return "\n".join(
        [
            "| " + " | ".join(rows) + " |",
            "|" + " --- |" * len(rows),
            "| " + " | ".join(rows.values()) + " |",
        ]
    )


def memory_section(findings: Findings) -> str:
    runs: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    for part, run, sizes in findings.memory:
        runs[f"{part} after {run.rstrip('0123456789').strip()}"].append((run, sizes))
    out = [
        "| processes | run | RSS of each process (MiB) | total (MiB) | second run vs first "
        "(target ≤ +10%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, series in runs.items():
        first = sum(series[0][1])
        for index, (run, sizes) in enumerate(series):
            total = sum(sizes)
            growth = ""
            if index == 1:
                change = (total - first) / first * 100 if first else 0.0
                growth = f"{change:+.1f}% {verdict(change <= 10)}"
                if change > 10:
                    findings.unmet.append(f"memory of {label}: {change:+.1f}%")
            out.append(
                f"| {label.split(' after ')[0]} | {run} | {', '.join(f'{s:.1f}' for s in sizes)} "
                f"| {total:.1f} | {growth} |"
            )
    out.append("")
    out.append(
        "gunicorn: each worker process (the master is not serving); Celery: the main process and "
        "each pool process. The second of two identical runs is compared with the first."
    )
    return "\n".join(out)


def bottleneck(label: str, cpu: CpuShare, cores: int, group: str, processes: int) -> str:
    """Where a configuration's throughput stopped: the cores, its own processes, or waiting."""
    ours = sorted(cpu.cores.items(), key=lambda kv: -kv[1])
    lead = ", ".join(f"{name} {value:.2f}" for name, value in ours[:3])
    other = max(0.0, cpu.busy - sum(cpu.cores.values()))
    seen = f"{cpu.busy:.2f} of {cores} cores busy; largest: {lead}; outside the kit {other:.2f}"
    used = cpu.cores.get(group, 0.0)
    if cpu.busy >= 0.9 * cores:
        return (
            f"{label}: the CPU is the limit ({seen}). More processes than cores only share "
            "the same cores, and each one adds connections and context switches."
        )
    if used >= 0.8 * processes:
        return (
            f"{label}: its {processes} {group} process(es) are busy ({used:.2f} cores; {seen}): "
            "a Python process computes on one core at a time (the GIL), so another process "
            "helps until the cores are full."
        )
    return f"{label}: neither the cores nor the processes are full ({seen}): the limit is waiting."


def scaling_section(findings: Findings, cores: int) -> str:
    out = ["| load | configuration | throughput |", "| --- | --- | --- |"]
    for what, configuration, figure, unit in findings.scaling:
        out.append(f"| {what} | {configuration} | {figure.show(1)} {unit} |")
    out.append("")
    for label, (share, group, processes) in sorted(findings.cpu.items()):
        out.append(f"- {bottleneck(label, share, cores, group, processes)}")
    return "\n".join(out)


NOT_RUN = "*Not run: the run named other sections (`--only`).*"


def compose(
    *,
    plan: Plan,
    started: str,
    machine: dict[str, str],
    versions: dict[str, str],
    configuration: list[str],
    sections: dict[str, str],
    findings: Findings,
    load: tuple[str, str],
) -> str:
    cores = int(machine["cores"])
    memory = memory_section(findings)
    scaling = scaling_section(findings, cores)
    conditions = [
        "| section | load average at start (1, 5, 15 min) | at end |",
        "| --- | --- | --- |",
        f"| whole run | {load[0]} | {load[1]} |",
        *[f"| {name} | {start} | {end} |" for name, start, end in findings.conditions],
    ]
    summary = (
        "Every target is met in this run."
        if not findings.unmet
        else "Targets not met in this run: " + "; ".join(findings.unmet) + ". What limits them is "
        "in each section's CPU lines and under Scaling."
    )
    parts = [
        "# Benchmark results",
        "",
        f"Written by `bench/run{'' if plan.name == 'full' else ' --' + plan.name}` on {started} "
        f"({plan.name} run). Each figure is the median [min - max] of {plan.reps} runs, beside "
        "the reference measured in the same run.",
        "",
        summary,
        "",
        "## Machine",
        "",
        table(machine),
        "",
        "## Versions",
        "",
        table(versions),
        "",
        "## Configuration",
        "",
        *[f"- {line}" for line in configuration],
        "",
        "## Conditions",
        "",
        "The machine is shared: other processes may run during the measurements; their CPU use "
        "is shown as *other processes* / *outside the kit*.",
        "",
        *conditions,
        "",
        "## 1. Callback ingestion",
        "",
        sections.get("ingestion", NOT_RUN),
        "",
        "## 2. Query API at scale",
        "",
        sections.get("queries", NOT_RUN),
        "",
        "## 3. End to end",
        "",
        sections.get("e2e", NOT_RUN),
        "",
        "## 4. Memory",
        "",
        memory,
        "",
        "## 5. Scaling",
        "",
        scaling,
        "",
        "## 6. A tool watching jobs",
        "",
        sections.get("watching", NOT_RUN),
        "",
    ]
    return "\n".join(parts)
