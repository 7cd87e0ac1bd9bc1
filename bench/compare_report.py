#!/usr/bin/env python3
"""Summaries and the report of bench/compare.sh (Vane, Mosquitto and rumqttd side by side).

`run`: combines what compare.sh recorded for one run (the `vane bench` JSON, its stderr, the
/proc samples of the broker and the load generator, RSS readings) into one JSON file: the
bench result, the broker's CPU over the measured window (% of one core), its peak RSS and,
for `conn`, its RSS per connection.

`report`: turns every run JSON of a results directory into a markdown report (report.md in
that directory): the machine, the broker versions, one table per scenario with every broker's
figure, the ratios Vane / this broker, CPU and RSS; and with --benchmarks writes it between
the <!-- compare:begin --> and <!-- compare:end --> markers of BENCHMARKS.md.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_common import machine_line, markdown_table, pct, raw_results_link, read_env, write_report  # noqa: E402

BEGIN = "<!-- compare:begin -->"
END = "<!-- compare:end -->"
NAMES = {"vane": "Vane", "mosquitto": "Mosquitto", "rumqttd": "rumqttd"}


# ---------------------------------------------------------------------------
# run: one run's summary
# ---------------------------------------------------------------------------
def read_samples(path):
    """(time, broker ticks, bench ticks, broker RSS kB, progress lines) per sample; a field
    the process no longer had is None."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = line.split()
        if len(parts) != 5:
            continue
        try:
            t = float(parts[0])
        except ValueError:
            continue
        vals = [None if p == "-" else int(p) for p in parts[1:]]
        rows.append((t, *vals))
    return rows


def cpu_pct(samples, column, start, end):
    """CPU of one process (column 1: broker, 2: load generator) over [start, end], as % of one
    core: from the last sample at or before start to the first at or after end."""
    rows = [r for r in samples if r[column] is not None]
    if len(rows) < 2:
        return None
    first = max((r for r in rows if r[0] <= start), key=lambda r: r[0], default=rows[0])
    last = min((r for r in rows if r[0] >= end), key=lambda r: r[0], default=rows[-1])
    secs = last[0] - first[0]
    if secs <= 0:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return 100.0 * (last[column] - first[column]) / hz / secs


def measured_window(kind, samples, args):
    """The time span the CPU figure covers, and what it is called."""
    if kind in ("flow", "latency"):
        # Progress lines start one second after the load does; the sample that first sees one
        # is up to 0.25 s late.
        first = next((r[0] for r in samples if r[4] and r[4] > 0), None)
        if first is not None:
            start = first - 1.125 + args.warmup
            return start, start + args.duration, "measured window"
    if kind == "conn" and args.opened:
        return args.launched, float(args.opened), "while connecting"
    return args.launched, args.ended, "whole run"


def failure_reason(err_lines, status):
    """Why a run failed, from the load generator's stderr: its error and causes."""
    for i, line in enumerate(err_lines):
        if line.startswith("Error:"):
            reason = [line[len("Error:"):].strip()]
            for more in err_lines[i + 1 :]:
                more = more.strip()
                if more.startswith("Stack backtrace"):
                    break
                if more and more != "Caused by:":
                    reason.append(more)
            return ": ".join(reason)
    other = [l.strip() for l in err_lines if l.strip() and not l.startswith("[")]
    if other:
        return " / ".join(other[-3:])
    if status in (137, 9):
        return "killed by the script's watchdog"
    return f"exit status {status}"


def num(s):
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


def summarise(args):
    bench = None
    try:
        text = Path(args.bench_json).read_text()
        bench = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        bench = None
    try:
        err_lines = Path(args.stderr).read_text(errors="replace").splitlines()
    except OSError:
        err_lines = []
    samples = read_samples(args.samples)
    start, end, window = measured_window(args.kind, samples, args)
    run = {
        "broker": args.broker,
        "scenario": args.scenario,
        "kind": args.kind,
        "command": "vane bench " + args.args,
        "exit_status": args.status,
        "ok": args.status == 0 and bench is not None,
        "bench": bench,
        "error": None,
        "cpu_window": window,
        "cpu_window_secs": round(end - start, 3),
        "broker_cpu_pct": cpu_pct(samples, 1, start, end),
        "bench_cpu_pct": cpu_pct(samples, 2, start, end),
        "broker_rss_before_kb": num(args.rss_before),
        "broker_rss_loaded_kb": num(args.rss_loaded),
        "broker_rss_peak_kb": num(args.rss_peak),
        "rss_per_connection_bytes": None,
        "run_secs": round(args.ended - args.launched, 3),
    }
    if not run["ok"]:
        run["error"] = failure_reason(err_lines, args.status)
    if args.kind == "conn" and bench:
        opened = bench.get("opened") or 0
        before, loaded = run["broker_rss_before_kb"], run["broker_rss_loaded_kb"]
        if opened and before is not None and loaded is not None:
            run["rss_per_connection_bytes"] = (loaded - before) * 1024 / opened
    Path(args.out).write_text(json.dumps(run, indent=2) + "\n")
    status = "ok" if run["ok"] else f"FAILED ({run['error']})"
    cpu = run["broker_cpu_pct"]
    print(
        f"  {args.broker} / {args.scenario}: {status}; broker CPU "
        f"{'n/a' if cpu is None else f'{cpu:.0f}%'} ({window})",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------
# report: the markdown tables
# ---------------------------------------------------------------------------
def group(n):
    return f"{round(n):,}"


def ratio(vane, other, digits=2):
    if vane is None or other is None or other == 0:
        return "n/a"
    return f"{vane / other:.{digits}f}×"


def mib(kb):
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


class Scenario:
    """How one scenario is titled, what its main figure is and how its table looks."""

    def __init__(self, env):
        self.env = env

    def title(self, sid):
        e = self.env
        return {
            "fanin-qos0": f"Fan-in, QoS 0: {e['publishers']} publishers → 1 subscriber on `bench/#`",
            "fanin-qos1": f"Fan-in, QoS 1: {e['publishers']} publishers → 1 subscriber on `bench/#`",
            "fanout-qos0": f"Fan-out, QoS 0: 1 publisher → {e['subscribers']} subscribers",
            "fanout-qos1": f"Fan-out, QoS 1: 1 publisher → {e['subscribers']} subscribers",
            "pairs-qos0": f"Pairs, QoS 0: {e['pairs']} publisher/subscriber pairs, each on its own topic",
            "latency": f"Latency: 1 publisher at {group(int(e['latency_rate']))} msg/s → 1 subscriber, QoS 0",
            "conn": f"Connections: {group(int(e['connections']))} idle connections, opened as fast as accepted",
            "retained": f"Retained: {group(int(e['retained']))} retained messages, then a new `#` subscriber",
        }.get(sid, sid)


def failed_cell(run):
    if run is None:
        return "not run"
    return f"failed (exit {run['exit_status']})"


def flow_table(runs, brokers, names):
    qos1 = any(get(r, "bench", "qos") for r in runs.values() if r)
    head = ["broker", "msg/s received", "Vane / this", "msg/s sent"]
    if qos1:
        head.append("lost (acked, never delivered)")
    head += ["broker CPU", "broker RSS peak", "load generator CPU"]
    vane = get(runs.get("vane"), "bench", "received_per_sec")
    rows = []
    for b in brokers:
        r = runs.get(b)
        if not r or not r["ok"]:
            rows.append([names[b], failed_cell(r)] + [""] * (len(head) - 2))
            continue
        bench = r["bench"]
        recv = bench.get("received_per_sec")
        row = [
            names[b],
            group(recv),
            "—" if b == "vane" else ratio(vane, recv),
            group(bench.get("sent_per_sec") or 0),
        ]
        if qos1:
            lost = get(bench, "totals", "lost")
            row.append("n/a" if lost is None else group(lost))
        row += [pct(r["broker_cpu_pct"]), mib(r["broker_rss_peak_kb"]), pct(r["bench_cpu_pct"])]
        rows.append(row)
    return head, rows


def latency_table(runs, brokers, names):
    head = ["broker", "p50", "p99", "p99.9", "max", "Vane / this (p99)", "lost", "broker CPU", "broker RSS peak"]
    vane = get(runs.get("vane"), "bench", "latency_us", "p99")
    rows = []
    for b in brokers:
        r = runs.get(b)
        if not r or not r["ok"]:
            rows.append([names[b], failed_cell(r)] + [""] * (len(head) - 2))
            continue
        lat = r["bench"].get("latency_us", {})
        us = lambda k: "n/a" if lat.get(k) is None else f"{group(lat[k])} µs"
        rows.append([
            names[b], us("p50"), us("p99"), us("p99.9"), us("max"),
            "—" if b == "vane" else ratio(vane, lat.get("p99")),
            group(r["bench"].get("lost") or 0),
            pct(r["broker_cpu_pct"]), mib(r["broker_rss_peak_kb"]),
        ])
    return head, rows


def conn_table(runs, brokers, names):
    head = [
        "broker", "opened", "failed", "connect rate", "Vane / this (rate)",
        "broker RSS per connection", "Vane / this (RSS)", "broker CPU while connecting", "broker RSS peak",
    ]
    vane = runs.get("vane")
    vane_rate = get(vane, "bench", "connect_per_sec")
    vane_rss = get(vane, "rss_per_connection_bytes")
    rows = []
    for b in brokers:
        r = runs.get(b)
        if not r or not r["ok"]:
            rows.append([names[b], failed_cell(r)] + [""] * (len(head) - 2))
            continue
        bench = r["bench"]
        rate = bench.get("connect_per_sec")
        per_conn = r["rss_per_connection_bytes"]
        rows.append([
            names[b], group(bench.get("opened") or 0), group(bench.get("failed") or 0),
            f"{group(rate)} conn/s",
            "—" if b == "vane" else ratio(vane_rate, rate),
            "n/a" if per_conn is None else f"{per_conn / 1024:.1f} KiB",
            "—" if b == "vane" else ratio(vane_rss, per_conn),
            pct(r["broker_cpu_pct"]), mib(r["broker_rss_peak_kb"]),
        ])
    return head, rows


def retained_figure(r, wait):
    """Seconds until the new subscriber had every retained message, or why not."""
    bench = r["bench"]
    if bench.get("missing", 0) == 0:
        return bench.get("receive_secs"), f"{bench['receive_secs']:.3f} s"
    return None, f"stalled after {group(bench.get('received', 0))} (waited {wait} s)"


def retained_table(runs, brokers, names, env):
    head = ["broker", "new subscriber has them all after", "Vane / this", "first message after", "storing them took", "broker CPU (whole run)", "broker RSS peak"]
    wait = env.get("retained_wait", "?")
    vane = runs.get("vane")
    vane_secs = retained_figure(vane, wait)[0] if vane and vane["ok"] else None
    rows = []
    for b in brokers:
        r = runs.get(b)
        if not r or not r["ok"]:
            cell = failed_cell(r)
            if r and r.get("error") and "acknowledged by the deadline" in r["error"]:
                cell = f"stalled while storing: {r['error']}"
            rows.append([names[b], cell] + [""] * (len(head) - 2))
            continue
        secs, text = retained_figure(r, wait)
        bench = r["bench"]
        first = bench.get("first_message_secs")
        rows.append([
            names[b], text,
            "—" if b == "vane" else ratio(vane_secs, secs),
            "n/a" if first is None else f"{first:.3f} s",
            f"{bench.get('store_secs', 0):.2f} s",
            pct(r["broker_cpu_pct"]), mib(r["broker_rss_peak_kb"]),
        ])
    return head, rows


def build_report(directory):
    env = read_env(directory / "machine.env")
    brokers = env["brokers"].split()
    scenarios = env["scenarios"].split()
    runs = {}
    for path in sorted(directory.glob("*.json")):
        run = json.loads(path.read_text())
        runs.setdefault(run["scenario"], {})[run["broker"]] = run
    names = {}
    for b in brokers:
        version = env.get(f"version_{b}", "").split()
        label = NAMES.get(b, b)
        if b != "vane" and len(version) >= 2:
            label += f" {version[-1]}"
        names[b] = label
    described = [f"{names[b]} ({env.get('vane_rev', '?')})" if b == "vane" else names[b] for b in brokers]
    titles = Scenario(env)
    rel = raw_results_link(directory)
    lines = [
        f"Run of {env['date']} with `bash bench/compare.sh` ([raw results]({rel}/)). "
        f"Machine: {machine_line(env)}. "
        f"Brokers: {', '.join(described)}; each is started afresh for every run, "
        f"pinned to CPU {env['broker_cpu']}, with `vane bench` pinned to CPU {env['bench_cpu']}.",
        "",
        f"MQTT {env['mqtt_version']}, {env['payload']}-byte payloads, {env['warmup']} s warmup then "
        f"{env['duration']} s measured (fan-in, fan-out, pairs, latency). "
        "Settings: no persistence, anonymous clients; Vane on its defaults "
        f"(`max_inflight` 1024, queue 10,000 messages); Mosquitto `max_inflight_messages {env['inflight']}`, "
        f"`max_queued_messages {env['mosquitto_max_queued']}`, `max_queued_bytes 0`, `max_connections -1`, "
        f"`set_tcp_nodelay true`; rumqttd `max_inflight_count {env['inflight']}`, `max_payload_size` 1 MiB, "
        "`next_connection_delay_ms 0`, `max_connections` above the scenario's (configurations in the raw results).",
        "",
        "\"Vane / this\" is Vane's figure divided by that broker's: above 1× Vane does more for "
        "rates, below 1× Vane takes less for latencies, times and memory. CPU is the broker's "
        "user + system time over the measured window as a share of one core (100% = one core "
        "busy); a load generator near 100% means the figure is bounded by the client. RSS peak is "
        "the broker's VmHWM. \"msg/s sent\" counts the publishes the load generator finished "
        "writing in the window: at QoS 0, publishers to a broker that reads slower than they write "
        "fill the socket buffers during the warmup and then wait, so it can be far from the "
        "received rate, even 0. For connections, CPU covers the time until every connection is "
        "open, often under a second: read it as a rough figure.",
    ]
    for sid in scenarios:
        per_broker = runs.get(sid, {})
        lines += ["", f"**{titles.title(sid)}**", ""]
        if sid.startswith(("fanin", "fanout", "pairs")):
            head, rows = flow_table(per_broker, brokers, names)
        elif sid == "latency":
            head, rows = latency_table(per_broker, brokers, names)
        elif sid == "conn":
            head, rows = conn_table(per_broker, brokers, names)
        elif sid == "retained":
            head, rows = retained_table(per_broker, brokers, names, env)
        else:
            continue
        lines.append(markdown_table(head, rows))
        errors = [f"{names[b]}: {r['error']}" for b, r in per_broker.items() if r and not r["ok"] and r.get("error")]
        if errors:
            lines += [""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def report(args):
    directory = Path(args.dir)
    write_report(directory, build_report(directory), args.benchmarks, BEGIN, END, "compare")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="summarise one run")
    r.add_argument("--out", required=True)
    r.add_argument("--broker", required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--kind", required=True, choices=["flow", "latency", "conn", "retained"])
    r.add_argument("--bench-json", required=True)
    r.add_argument("--stderr", required=True)
    r.add_argument("--samples", required=True)
    r.add_argument("--status", type=int, required=True)
    r.add_argument("--launched", type=float, required=True)
    r.add_argument("--ended", type=float, required=True)
    r.add_argument("--opened", default="")
    r.add_argument("--warmup", type=float, required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--rss-before", default="")
    r.add_argument("--rss-loaded", default="")
    r.add_argument("--rss-peak", default="")
    r.add_argument("--args", default="")
    p = sub.add_parser("report", help="write the markdown report of a results directory")
    p.add_argument("--dir", required=True)
    p.add_argument("--benchmarks", help="BENCHMARKS.md to write the report into")
    args = parser.parse_args()
    if args.command == "run":
        summarise(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
