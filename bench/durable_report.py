#!/usr/bin/env python3
"""The report of bench/durable.sh (Vane `sync` and `batch` against Mosquitto with persistence).

`report`: turns a results directory (machine.env, one <broker>-<scenario>.env of facts per run,
and for throughput the summary JSON that compare_report.py wrote in raw/) into a markdown
report (report.md in that directory), and with --benchmarks writes it between the
<!-- durable:begin --> and <!-- durable:end --> markers of BENCHMARKS.md.
"""

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_common  # noqa: E402
from report_common import machine_line, markdown_table, pct, raw_results_link, write_report  # noqa: E402

BEGIN = "<!-- durable:begin -->"
END = "<!-- durable:end -->"
LABELS = {
    "vane-sync": "Vane `sync`",
    "vane-batch": "Vane `batch`",
    "vane-memory": "Vane `memory`",
    "mosquitto": "Mosquitto",
}


def read_env(path):
    return report_common.read_env(path, missing_ok=True)


def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def group(n):
    return "n/a" if n is None else f"{round(n):,}"


def secs(v, digits=2):
    v = fnum(v)
    return "n/a" if v is None else f"{v:.{digits}f} s"


def mib(kb):
    kb = fnum(kb)
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"


def size(b):
    b = fnum(b)
    return "n/a" if b is None else f"{b / 1024 / 1024:.1f} MiB"


def ratio(a, b):
    a, b = fnum(a), fnum(b)
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def status_note(f, key):
    s = f.get(key)
    return None if s in (None, "", "0") else f"exit {s}"


def throughput_table(directory, brokers, names, facts):
    head = ["broker", "msg/s received", "× Mosquitto", "lost (acked, not delivered by the end of the drain)", "duplicates",
            "broker CPU", "broker RSS peak", "store on disk after", "load generator CPU"]
    runs = {}
    for b in brokers:
        path = directory / "raw" / f"{b}-throughput.summary.json"
        try:
            runs[b] = json.loads(path.read_text())
        except (OSError, ValueError):
            runs[b] = None
    mosq = runs.get("mosquitto")
    mosq_rate = mosq["bench"].get("received_per_sec") if mosq and mosq.get("ok") else None
    rows, notes = [], []
    for b in brokers:
        if (b, "throughput") not in facts:
            continue
        r = runs.get(b)
        if not r or not r.get("ok"):
            err = (r or {}).get("error") or "no result"
            rows.append([names[b], "failed"] + [""] * (len(head) - 2))
            notes.append(f"{names[b]}: {err}")
            continue
        bench = r["bench"]
        totals = bench.get("totals", {})
        recv = bench.get("received_per_sec")
        rows.append([
            names[b], group(recv),
            "—" if b == "mosquitto" else ratio(recv, mosq_rate),
            group(totals.get("lost")), group(totals.get("duplicates")),
            pct(r.get("broker_cpu_pct")), mib(r.get("broker_rss_peak_kb")),
            size(facts[(b, "throughput")].get("disk_bytes_after")) if b != "vane-memory" else "—",
            pct(r.get("bench_cpu_pct")),
        ])
    return head, rows, notes


def startup_rows(brokers, names, facts, scenario, fill_cell, check_cell):
    rows, notes = [], []
    for b in brokers:
        f = facts.get((b, scenario))
        if f is None:
            continue
        for key, what in (("fill_status", "filling"), ("check_status", "the check")):
            n = status_note(f, key)
            if n:
                notes.append(f"{names[b]}: `vane bench` {n} while {what} (see raw/{b}-{scenario}-*.stderr)")
        if f.get("stop_killed") == "1":
            notes.append(f"{names[b]}: did not stop within the wait after SIGTERM; killed")
        if not f.get("startup_secs"):
            notes.append(f"{names[b]}: did not answer a CONNECT after the restart")
        rows.append([
            names[b],
            fill_cell(f),
            secs(f.get("stop_secs")),
            size(f.get("disk_bytes")),
            f"**{secs(f.get('startup_secs'), 3)}**",
            secs(f.get("startup_cpu_secs")),
            secs(f.get("startup_empty_secs"), 3),
            mib(f.get("rss_filled_kb")),
            mib(f.get("rss_started_kb")),
            check_cell(f),
        ])
    return rows, notes


STARTUP_HEAD = ["broker", "filling took", "stop (SIGTERM) took", "on disk", "start-up (exec → CONNACK)",
                "broker CPU until CONNACK", "start-up, empty", "RSS before stop", "RSS after start-up"]


def retained_table(brokers, names, facts, env):
    n = int(env.get("retained", 0))

    def check(f):
        got = fnum(f.get("check_received"))
        if got is None:
            return "n/a"
        cell = f"{group(got)} of {group(n)} in {secs(f.get('check_secs'))}"
        return cell if got == n else f"only {cell} (waited {env.get('check_wait')} s)"

    rows, notes = startup_rows(brokers, names, facts, "retained-startup",
                               lambda f: secs(f.get("fill_secs")), check)
    return STARTUP_HEAD + ["new `#` subscriber got"], rows, notes


def sessions_table(brokers, names, facts, env):
    n = int(env.get("sessions", 0))

    def fill(f):
        opened = fnum(f.get("fill_subscribed"))
        cell = secs(f.get("fill_secs"))
        return cell if opened == n else f"{cell} ({group(opened)} of {group(n)} subscribed)"

    def check(f):
        got = fnum(f.get("check_resumed"))
        if got is None:
            return "n/a"
        return f"{group(got)} of {group(n)} (reconnecting all: {secs(f.get('check_secs'))})"

    rows, notes = startup_rows(brokers, names, facts, "sessions-startup", fill, check)
    return STARTUP_HEAD + ["sessions resumed after"], rows, notes


def queued_table(brokers, names, facts, env):
    sessions, messages = int(env.get("queue_sessions", 0)), int(env.get("queue_messages", 0))
    queued = sessions * messages
    head = ["broker", "RSS, empty", f"RSS with {group(sessions)} offline sessions",
            f"publishing {group(messages)} QoS 1 messages took", f"**RSS with {group(queued)} queued**",
            "RSS per queued message", "RSS peak", "on disk", "sessions then received", "RSS once delivered"]
    rows, notes = [], []
    for b in brokers:
        f = facts.get((b, "queued-rss"))
        if f is None:
            continue
        for key, what in (("sessions_status", "making the sessions"), ("publish_status", "publishing"),
                          ("check_status", "the check")):
            s = status_note(f, key)
            if s:
                notes.append(f"{names[b]}: `vane bench` {s} while {what}")
        before, after = fnum(f.get("rss_before_kb")), fnum(f.get("rss_after_kb"))
        per = None if before is None or after is None or not queued else (after - before) * 1024 / queued
        got = fnum(f.get("check_received"))
        check = "n/a" if got is None else (
            f"{group(got)} of {group(queued)} (per session {group(fnum(f.get('check_min')))}–"
            f"{group(fnum(f.get('check_max')))})")
        if got is not None and got < queued:
            check += f" within {env.get('check_wait')} s"
        acked = fnum(f.get("publish_acked"))
        publish = secs(f.get("publish_secs"))
        if acked is not None and acked != messages:
            publish += f" ({group(acked)} acknowledged)"
        rows.append([
            names[b], mib(f.get("rss_empty_kb")), mib(before), publish, f"**{mib(after)}**",
            "n/a" if per is None else f"{per:.0f} B",
            mib(f.get("rss_peak_queued_kb")), size(f.get("disk_bytes")), check, mib(f.get("rss_drained_kb")),
        ])
    return head, rows, notes


def build_report(directory):
    env = read_env(directory / "machine.env")
    brokers = env["brokers"].split()
    scenarios = env["scenarios"].split()
    facts = {}
    for path in sorted(directory.glob("*.env")):
        if path.name == "machine.env":
            continue
        f = read_env(path)
        if "broker" in f and "scenario" in f:
            facts[(f["broker"], f["scenario"])] = f
    names = {}
    for b in brokers:
        label = LABELS.get(b, b)
        version = env.get(f"version_{b}", "").split()
        if b == "mosquitto" and len(version) >= 2:
            label += f" {version[-1]}"
        names[b] = label
    rel = raw_results_link(directory)
    mosq = next((names[b] for b in brokers if b == "mosquitto"), "Mosquitto")
    total = env.get("total_secs")
    lines = [
        f"Run of {env['date']} with `bash bench/durable.sh` ([raw results]({rel}/), with the "
        f"configuration files). Vane at commit {env.get('vane_rev', '?')}; {mosq}. Machine: "
        f"{machine_line(env)}, "
        f"state directories on {env.get('filesystem') or 'an unknown filesystem'}, load average "
        f"{env.get('loadavg_before', '?')} just before the run. Each broker is "
        f"started afresh on an empty state directory for every scenario, pinned to CPU "
        f"{env['broker_cpu']}, with `vane bench` pinned to CPU {env['bench_cpu']}"
        + (f"; the whole run took {int(total) // 60} min {int(total) % 60} s." if total else "."),
        "",
        "What an acknowledgement promises: Vane `sync` sends PUBACK/SUBACK once what it acknowledges "
        "is fdatasync'ed to its store (group commit); `batch` once it is written to the operating "
        "system, synced within 10 ms; `memory` keeps nothing across a restart. Mosquitto with "
        f"`persistence true` keeps everything in memory and writes its whole database (a new "
        f"`mosquitto.db`, fsynced, then renamed over the old one) every `autosave_interval` "
        f"({env.get('mosquitto_autosave')} s here, time-based, `autosave_on_changes false`: the "
        "shortest interval it takes, as the closest match to Vane's promises) and at shutdown; "
        "nothing is written per message, so a crash loses up to the last interval and a "
        "PUBACK promises nothing about the disk. Caps: Mosquitto `max_inflight_messages "
        f"{env.get('inflight')}`, `max_queued_messages {env.get('mosquitto_max_queued')}` (raised from "
        "its default 1000), `max_queued_bytes 0`; Vane on its defaults (`max_inflight` 1024, "
        f"`[queue] max_messages {env.get('vane_max_queued')}`, which 1,000 messages per session do "
        "not reach, so no cap was raised). MQTT 3.1.1, "
        f"{env.get('payload')}-byte payloads. Start-up is timed from the broker's exec until a client "
        "retrying every 5 ms gets a CONNACK; \"start-up, empty\" is the same on an empty state "
        "directory. RSS is VmRSS, RSS peak VmHWM.",
    ]
    sections = {
        "throughput": (
            f"**Persistent-session QoS 1 throughput: {env['publishers']} publishers → 1 subscriber "
            f"with a persistent session (clean session 0) on `bench/#`, {env['warmup']} s warmup then "
            f"{env['duration']} s measured**",
            lambda: throughput_table(directory, brokers, names, facts),
        ),
        "retained-startup": (
            f"**Start-up with {group(int(env['retained']))} retained messages ({env['payload']}-byte "
            "payloads, stored at QoS 1), after a graceful stop (SIGTERM)**",
            lambda: retained_table(brokers, names, facts, env),
        ),
        "sessions-startup": (
            f"**Start-up with {group(int(env['sessions']))} offline persistent sessions, each "
            "subscribed to a topic of its own (QoS 1), after a graceful stop (SIGTERM)**",
            lambda: sessions_table(brokers, names, facts, env),
        ),
        "queued-rss": (
            f"**Memory with {group(int(env['queue_sessions']) * int(env['queue_messages']))} queued "
            f"messages: {group(int(env['queue_sessions']))} offline persistent sessions on `q/#`, "
            f"{group(int(env['queue_messages']))} QoS 1 messages published to them**",
            lambda: queued_table(brokers, names, facts, env),
        ),
    }
    for sid in scenarios:
        if sid not in sections:
            continue
        title, build = sections[sid]
        head, rows, notes = build()
        lines += ["", title, "", markdown_table(head, rows)]
        if sid == "throughput":
            lines += ["", "After the measured time the subscriber takes what is still queued for it, "
                      "until nothing has arrived for 5 s (longer than any of Mosquitto's autosave "
                      "pauses), 60 s at most; what has not arrived by then counts as lost. CPU is "
                      "over the measured window, as a share of one core."]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="write the markdown report of a results directory")
    p.add_argument("--dir", required=True)
    p.add_argument("--benchmarks", help="BENCHMARKS.md to write the report into")
    args = parser.parse_args()
    directory = Path(args.dir)
    write_report(directory, build_report(directory), args.benchmarks, BEGIN, END, "durable")


if __name__ == "__main__":
    main()
