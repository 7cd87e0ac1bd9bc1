"""What the reports of bench/compare.sh and bench/durable.sh share: reading key=value files,
formatting figures and markdown tables, describing the machine, and writing a report into
report.md and between markers of BENCHMARKS.md.
"""

import os
import sys
from pathlib import Path


def read_env(path, missing_ok=False):
    """The key=value lines of a file as a dict; {} when it is missing and missing_ok."""
    env = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        if missing_ok:
            return env
        raise
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def pct(v):
    """A share of one core (or any percentage), rounded: "n/a" for None."""
    return "n/a" if v is None else f"{v:.0f}%"


def markdown_table(head, rows):
    """A markdown table, the first column left-aligned and the others right-aligned."""
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def raw_results_link(directory):
    """The results directory relative to the repository root, for the report's links."""
    return os.path.relpath(directory, Path(__file__).resolve().parent.parent)


def machine_line(env):
    """"<n> CPUs, <model>, <kernel>, <x> GiB of memory" from machine.env."""
    mem_gib = int(env.get("memory_kb", 0)) / 1024 / 1024
    return f"{env['cpus']} CPUs, {env['cpu_model']}, {env['kernel']}, {mem_gib:.1f} GiB of memory"


def splice(benchmarks, report, begin_marker, end_marker):
    """Replaces what is between begin_marker and end_marker in the file benchmarks by report."""
    text = benchmarks.read_text()
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        raise SystemExit(f"{benchmarks}: no {begin_marker} ... {end_marker} markers")
    benchmarks.write_text(text[: begin + len(begin_marker)] + "\n" + report + text[end:])


def write_report(directory, text, benchmarks, begin_marker, end_marker, tag):
    """Writes text to directory/report.md and stdout, and into benchmarks when it is given."""
    (directory / "report.md").write_text(text)
    print(text)
    if benchmarks:
        splice(Path(benchmarks), text, begin_marker, end_marker)
        print(f"[{tag}] report written into {benchmarks}", file=sys.stderr)
