"""Shared harness of the paho-mqtt interop scenario scripts.

Used by interop/paho_scenarios.py (MQTT 3.1/3.1.1) and
interop/paho_v5_scenarios.py (MQTT 5.0): result reporting, run settings,
resource tracking, the common part of the paho client wrapper and the
command line / main loop.  Output lines are parsed by interop/run.sh:
``PASS <name>``, ``FAIL <name>: <reason>``, ``SKIP <name>: <reason>``,
``PENDING <name>: <reason>``, ``NOTE <name>: <text>`` and a ``# ...`` summary.

Does not import paho itself (require_paho() checks for it), so that a missing
paho-mqtt is reported as a FAIL line by the scripts.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
import uuid

RUN_ID = uuid.uuid4().hex[:10]
CONNECT_TIMEOUT = 5.0


class Config:
    """Settings of this run, filled in by main() from the command line."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 1883
        self.quirks = ""  # "mosquitto": tolerate known mosquitto 2.0.x deviations (printed as NOTE lines)
        self.ws_path = ""  # set: paho clients speak MQTT over WebSocket (ws://host:port/ws_path)
        self.suffix = ""  # appended to scenario names in the output ("@ws" over WebSocket)

    def paho_transport(self) -> dict:
        """The mqtt.Client keyword arguments for the transport of this run."""
        return {"transport": "websockets"} if self.ws_path else {}

    def paho_setup(self, client) -> None:
        """Per-client transport settings (the WebSocket path)."""
        if self.ws_path:
            client.ws_set_options(path=self.ws_path)


cfg = Config()


def require_paho(tag: str) -> None:
    """Exit with ``FAIL <tag>: ...`` unless paho-mqtt 2.x is importable."""
    try:
        import paho.mqtt
        import paho.mqtt.client  # noqa: F401
    except ImportError:  # pragma: no cover - reported by run.sh
        print(f"FAIL {tag}: paho-mqtt is not installed (pip install 'paho-mqtt>=2,<3')")
        sys.exit(1)
    if int(paho.mqtt.__version__.split(".")[0]) != 2:
        print(f"FAIL {tag}: paho-mqtt 2.x required, found {paho.mqtt.__version__}")
        sys.exit(1)


def note(name: str, text: str) -> None:
    print(f"NOTE {name}: {text}", flush=True)


class ScenarioError(Exception):
    pass


class ScenarioSkip(Exception):
    """The broker under test legitimately lacks an optional feature (reported as SKIP)."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ScenarioError(msg)


def uniq(tag: str) -> str:
    return f"{tag}-{RUN_ID}-{uuid.uuid4().hex[:6]}"


def topic_maker(root: str):
    """A topic(*parts) function building ``<root>/<RUN_ID>/<parts...>``."""

    def topic(*parts: str) -> str:
        return "/".join((root, RUN_ID) + parts)

    return topic


# ---------------------------------------------------------------------------
# Resource tracking, so a scenario that times out cannot leak live clients
# into the next one.
# ---------------------------------------------------------------------------


class Resources:
    def __init__(self) -> None:
        self.items: list = []
        self.lock = threading.Lock()

    def add(self, item):
        with self.lock:
            self.items.append(item)
        return item

    def close_all(self) -> None:
        with self.lock:
            items, self.items = self.items, []
        for item in reversed(items):
            try:
                item.close()
            except Exception:
                pass


RES = Resources()


# ---------------------------------------------------------------------------
# paho wrapper: the part both scripts share
# ---------------------------------------------------------------------------


class Msg:
    """A received message (copied out of paho's MQTTMessage)."""

    __slots__ = ("topic", "payload", "qos", "retain")

    def __init__(self, m) -> None:
        self.topic = m.topic
        self.payload = bytes(m.payload)
        self.qos = m.qos
        self.retain = bool(m.retain)

    def _repr_extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (f"Msg({self.topic!r}, {self.payload[:40]!r}, qos={self.qos}, retain={self.retain}"
                f"{self._repr_extra()})")


class BaseClient:
    """A paho client (``self.c``, created by the subclass with automatic
    reconnection disabled) with its network loop in a background thread.

    Received messages are collected in ``messages`` as ``msg_class``
    instances; ``connack`` is (reason_code, session_present, properties).
    """

    msg_class = Msg

    def __init__(self, c, keepalive: int) -> None:
        self.cond = threading.Condition()
        self.messages: list[Msg] = []
        self.connack: tuple | None = None  # (reason_code, session_present, properties)
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self.subacks: dict[int, list] = {}
        self.handler = None  # optional callable(client, Msg), run in the network thread
        self.keepalive = keepalive
        self.c = c
        self.c.max_inflight_messages_set(20)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self._started = False
        self._closed = False
        RES.add(self)

    # callbacks ----------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connack = (reason_code, bool(flags.session_present), properties)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code
        self.disconnected.set()
        with self.cond:
            self.cond.notify_all()

    def _on_message(self, client, userdata, message):
        m = self.msg_class(message)
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()
        if self.handler is not None:
            self.handler(self, m)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.subacks[mid] = list(reason_codes)
            self.cond.notify_all()

    # helpers -------------------------------------------------------------
    def _wait(self, pred, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
            return True

    def _connect(self, connect_call, expect_ok: bool, stop_on_disconnect: bool) -> tuple:
        """Run connect_call() (paho's connect) with the loop thread running and
        wait for CONNACK; returns (reason_code, session_present, properties).
        With stop_on_disconnect, a connection closed before CONNACK fails at
        once instead of after CONNECT_TIMEOUT."""
        with self.cond:
            self.connack = None
        self.disconnected.clear()
        connect_call()
        if not self._started:
            self.c.loop_start()
            self._started = True
        ok = self._wait(lambda: self.connack is not None
                        or (stop_on_disconnect and self.disconnected.is_set()), CONNECT_TIMEOUT)
        check(ok, f"no CONNACK within {CONNECT_TIMEOUT}s")
        check(self.connack is not None, f"connection closed before CONNACK ({self.disconnect_reason})")
        rc, sp, p = self.connack
        if expect_ok:
            check(not rc.is_failure, f"CONNACK refused: {rc}")
        return rc, sp, p

    def wait_messages(self, n: int, timeout: float) -> list[Msg]:
        self._wait(lambda: len(self.messages) >= n, timeout)
        with self.cond:
            return list(self.messages)

    def take_messages(self) -> list[Msg]:
        with self.cond:
            msgs, self.messages = self.messages, []
            return msgs

    def disconnect(self, timeout: float = 5.0, properties=None) -> None:
        """Clean DISCONNECT, wait for the socket to be closed."""
        if properties is not None:
            self.c.disconnect(properties=properties)
        else:
            self.c.disconnect()
        check(self.disconnected.wait(timeout), "on_disconnect not called after disconnect()")
        self.c.loop_stop()
        self._started = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self.disconnected.is_set():
                self.c.disconnect()
                self.disconnected.wait(2.0)
        except Exception:
            pass
        try:
            self.c.loop_stop()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Running scenarios
# ---------------------------------------------------------------------------


def run_one(name: str, fn, timeout: float) -> tuple[bool | None, str]:
    """(True, "") passed, (False, reason) failed, (None, reason) skipped."""
    result: dict = {}

    def target():
        try:
            fn()
            result["ok"] = True
        except ScenarioError as e:
            result["err"] = str(e)
        except ScenarioSkip as e:
            result["skip"] = str(e)
        except Exception as e:  # unexpected error: include a short traceback
            tb = traceback.format_exc().strip().splitlines()
            result["err"] = f"{type(e).__name__}: {e} [{' | '.join(tb[-3:])}]"

    th = threading.Thread(target=target, name=f"scenario-{name}", daemon=True)
    th.start()
    th.join(timeout)
    RES.close_all()
    if th.is_alive():
        return False, f"timed out after {timeout}s"
    if result.get("ok"):
        return True, ""
    if "skip" in result:
        return None, result["skip"]
    return False, result.get("err", "unknown error")


def main(scenarios: list, *, doc: str | None, label: str, pending: dict | None = None) -> int:
    """Parse the command line, run the scenarios, print one line each and a
    ``# <label>: ...`` summary; returns the exit code (1 if any failed).

    scenarios: (name, function, timeout in s, Vane-only) tuples.
    pending: name -> reason of scenarios reported as PENDING and not run
    unless --all is given.  None: the script has no such list (no --all
    option, no pending count in the summary).
    """
    has_pending = pending is not None
    pending = pending or {}
    vane_only_names = [name for name, _, _, vane_only in scenarios if vane_only]
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    if has_pending:
        ap.add_argument("--all", action="store_true", help="also run the PENDING scenarios, as real tests")
    ap.add_argument("--no-vane", action="store_true",
                    help="broker is not Vane: skip Vane-only scenarios"
                    + (f" ({', '.join(vane_only_names)})" if vane_only_names else ""))
    ap.add_argument("--quirks", choices=["", "mosquitto"], default="",
                    help="tolerate known deviations of this reference broker (reported as NOTE lines)")
    ap.add_argument("--only", nargs="*", help="run only these scenarios"
                    + (" (PENDING ones only with --all)" if has_pending else ""))
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--ws-path", default="",
                    help="paho clients connect over WebSocket (ws://HOST:PORT/PATH, subprotocol mqtt); "
                    "scenarios that use raw sockets must then be left out with --only")
    args = ap.parse_args()
    run_all = has_pending and args.all
    if args.list:
        for name, _, _, vane_only in scenarios:
            extra = "  (vane only)" if vane_only else ""
            if name in pending:
                extra += f"  (PENDING: {pending[name]})"
            print(name + extra)
        return 0
    if args.port is None:
        ap.error("--port is required")
    cfg.host, cfg.port, cfg.quirks = args.host, args.port, args.quirks
    cfg.ws_path = args.ws_path
    cfg.suffix = "@ws" if args.ws_path else ""

    failed = passed = n_pending = 0
    t_start = time.monotonic()
    for name, fn, timeout, vane_only in scenarios:
        if args.only and name not in args.only:
            continue
        if name in pending and not run_all:
            n_pending += 1
            print(f"PENDING {name}{cfg.suffix}: {pending[name]} (not run; --all runs it)", flush=True)
            continue
        if vane_only and args.no_vane:
            print(f"SKIP {name}{cfg.suffix}: Vane-only scenario (broker override in use)", flush=True)
            continue
        ok, err = run_one(name, fn, timeout)
        if ok is None:
            print(f"SKIP {name}{cfg.suffix}: {err}", flush=True)
        elif ok:
            passed += 1
            print(f"PASS {name}{cfg.suffix}", flush=True)
        else:
            failed += 1
            print(f"FAIL {name}{cfg.suffix}: {err}", flush=True)
    counts = f"{passed} passed, {failed} failed"
    if has_pending:
        counts += f", {n_pending} pending"
    print(f"# {label}: {counts} in {time.monotonic() - t_start:.1f}s", flush=True)
    return 1 if failed else 0
