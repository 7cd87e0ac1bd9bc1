#!/usr/bin/env python3
"""MQTT interoperability scenarios for Vane, driven by paho-mqtt 2.x.

Each scenario is a function; it runs in its own thread with a hard timeout and
prints exactly one line: ``PASS <name>``, ``FAIL <name>: <reason>`` or
``SKIP <name>: <reason>``.  The process exit code is 1 if any scenario failed.

Only ever talks to the broker given by --host/--port (127.0.0.1 by default).

Usage:
    python3 interop/paho_scenarios.py --port 1883 [--no-vane] [--only NAME ...]
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # harness.py, whatever the cwd

import harness  # noqa: E402
from harness import (  # noqa: E402
    CONNECT_TIMEOUT, RES, RUN_ID, BaseClient, Msg, ScenarioError, cfg, check, note, topic_maker, uniq,
)

harness.require_paho("paho_import")

import paho.mqtt.client as mqtt  # noqa: E402

topic = topic_maker("interop")


# ---------------------------------------------------------------------------
# paho wrapper
# ---------------------------------------------------------------------------


class PahoClient(BaseClient):
    """A paho client running its network loop in a background thread.

    Automatic reconnection is disabled so that disconnects (e.g. takeover)
    are observable and do not cause reconnect storms.
    """

    def __init__(
        self,
        client_id: str = "",
        clean_session: bool = True,
        protocol=mqtt.MQTTv311,
        will: tuple | None = None,
        keepalive: int = 30,
    ) -> None:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=protocol,
            reconnect_on_failure=False,
            **cfg.paho_transport(),
        )
        cfg.paho_setup(c)
        super().__init__(c, keepalive)
        if will is not None:
            w_topic, w_payload, w_qos, w_retain = will
            self.c.will_set(w_topic, w_payload, w_qos, w_retain)

    def connect(self, expect_ok: bool = True) -> tuple:
        """Connect and wait for CONNACK; returns (reason_code, session_present)."""
        rc, sp, _ = self._connect(lambda: self.c.connect(cfg.host, cfg.port, keepalive=self.keepalive),
                                  expect_ok, stop_on_disconnect=False)
        return rc, sp

    def reconnect(self) -> tuple:
        # The loop thread exits after a disconnect (reconnect_on_failure=False),
        # so make sure it is gone and start a fresh one.
        self.c.loop_stop()
        self._started = False
        return self.connect()

    def subscribe(self, topics, qos: int = 0, timeout: float = 5.0) -> list:
        """Subscribe and wait for SUBACK; returns the granted QoS list."""
        rc, mid = self.c.subscribe(topics, qos)
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe() failed: {rc}")
        ok = self._wait(lambda: mid in self.subacks, timeout)
        check(ok, f"no SUBACK for {topics!r} within {timeout}s")
        granted = [rc.value for rc in self.subacks[mid]]
        check(all(g < 0x80 for g in granted), f"subscription refused: {granted}")
        return granted

    def publish(self, t: str, payload, qos: int = 0, retain: bool = False, wait: bool = True, timeout: float = 10.0):
        info = self.c.publish(t, payload, qos, retain)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish() failed: {info.rc}")
        if wait and qos > 0:
            info.wait_for_publish(timeout)
            check(info.is_published(), f"publish to {t} (qos {qos}) not acknowledged within {timeout}s")
        return info


def connected(client_id: str = "", **kw) -> PahoClient:
    c = PahoClient(client_id=client_id, **kw)
    c.connect()
    return c


# ---------------------------------------------------------------------------
# Raw-socket MQTT 3.1.1 client: used where we need precise control over the
# socket (abrupt close, going silent past the keep-alive).
# ---------------------------------------------------------------------------


def _enc_str(s) -> bytes:
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def _enc_len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


class RawClient:
    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        RES.add(self)

    def connect(
        self,
        client_id: str,
        keepalive: int = 60,
        clean: bool = True,
        will: tuple | None = None,
    ) -> tuple[int, bool]:
        flags = 0x02 if clean else 0
        payload = _enc_str(client_id)
        if will is not None:
            w_topic, w_payload, w_qos, w_retain = will
            flags |= 0x04 | (w_qos << 3) | (0x20 if w_retain else 0)
            payload += _enc_str(w_topic) + _enc_str(w_payload)
        vh = _enc_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
        body = vh + payload
        pkt = b"\x10" + _enc_len(len(body)) + body
        self.sock = socket.create_connection((cfg.host, cfg.port), timeout=CONNECT_TIMEOUT)
        self.sock.sendall(pkt)
        connack = self._recv_exact(4)
        check(connack[0] == 0x20 and connack[1] == 2, f"bad CONNACK bytes {connack!r}")
        check(connack[3] == 0, f"CONNACK refused, return code {connack[3]}")
        return connack[3], bool(connack[2] & 1)

    def _recv_exact(self, n: int) -> bytes:
        assert self.sock is not None
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            check(chunk != b"", f"connection closed while reading ({len(buf)}/{n} bytes)")
            buf += chunk
        return buf

    def abort(self) -> None:
        """Close the TCP connection without sending DISCONNECT."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self.abort()


def wait_silence(client: PahoClient, seconds: float) -> list[Msg]:
    """Wait `seconds`, return whatever arrived meanwhile."""
    time.sleep(seconds)
    return client.take_messages()


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def _pubsub(qos: int, count: int = 100) -> None:
    t = topic(f"q{qos}")
    sub = connected(uniq(f"sub-q{qos}"))
    granted = sub.subscribe(t, qos)
    check(granted == [qos], f"granted {granted}, expected [{qos}]")
    pub = connected(uniq(f"pub-q{qos}"))
    infos = [pub.publish(t, f"m-{i}".encode(), qos, wait=False) for i in range(count)]
    if qos > 0:
        deadline = time.monotonic() + 15
        for info in infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            check(info.is_published(), f"publish mid={info.mid} not acknowledged")
    msgs = sub.wait_messages(count, 15)
    # give the broker a moment to deliver (wrong) extra copies
    time.sleep(0.3)
    msgs = sub.take_messages()
    payloads = [m.payload for m in msgs]
    expected = [f"m-{i}".encode() for i in range(count)]
    if qos == 0:
        check(sorted(set(payloads)) == sorted(expected),
              f"received {len(set(payloads))} distinct of {count} messages")
    else:
        missing = [p for p in expected if p not in payloads]
        check(not missing, f"{len(missing)} messages missing, first {missing[:3]}")
        check(len(payloads) == count, f"received {len(payloads)} messages, expected exactly {count} (duplicates?)")
        check(payloads == expected, "messages out of order")
    bad_qos = [m for m in msgs if m.qos != qos]
    check(not bad_qos, f"delivered with wrong qos: {bad_qos[:3]}")
    bad_topic = [m for m in msgs if m.topic != t]
    check(not bad_topic, f"wrong topic: {bad_topic[:3]}")
    check(not any(m.retain for m in msgs), "live messages delivered with retain=1")
    pub.disconnect()
    sub.disconnect()


def scenario_qos0_pubsub():
    _pubsub(0)


def scenario_qos1_pubsub():
    _pubsub(1)


def scenario_qos2_pubsub():
    _pubsub(2)


def scenario_qos_downgrade():
    t = topic("downgrade")
    sub = connected(uniq("sub-dg"))
    check(sub.subscribe(t, 0) == [0], "granted qos != 0")
    pub = connected(uniq("pub-dg"))
    for i in range(5):
        pub.publish(t, f"d-{i}", 2)
    msgs = sub.wait_messages(5, 5)
    time.sleep(0.3)
    msgs = sub.take_messages()
    check(len(msgs) == 5, f"received {len(msgs)} messages, expected 5: {msgs}")
    check(all(m.qos == 0 for m in msgs), f"expected qos 0 deliveries, got {[m.qos for m in msgs]}")
    check([m.payload for m in msgs] == [f"d-{i}".encode() for i in range(5)], f"unexpected payloads {msgs}")
    # and the other direction: sub QoS 2, pub QoS 1 -> delivered at QoS 1
    t2 = topic("downgrade2")
    check(sub.subscribe(t2, 2) == [2], "granted qos != 2")
    pub.publish(t2, "x", 1)
    msgs = sub.wait_messages(1, 5)
    check(len(msgs) == 1 and msgs[0].qos == 1, f"sub qos2/pub qos1: expected one qos-1 message, got {msgs}")
    pub.disconnect()
    sub.disconnect()


def scenario_wildcards():
    base = topic("wc")
    sub_plus = connected(uniq("sub-plus"))
    sub_hash = connected(uniq("sub-hash"))
    sub_mixed = connected(uniq("sub-mixed"))
    sub_plus.subscribe(f"{base}/a/+/c", 1)
    sub_hash.subscribe(f"{base}/a/#", 1)
    sub_mixed.subscribe(f"{base}/+/b/#", 1)
    pub = connected(uniq("pub-wc"))
    sent = ["a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "a/b/d", "b/b/c", "a//c", "ab/c"]
    for s in sent:
        pub.publish(f"{base}/{s}", s, 1)
    # sentinel: subscribed by nobody except via '#' style filters; publish one
    # message that every filter matches so we know delivery is complete.
    time.sleep(0.5)
    expect_plus = {"a/b/c", "a/x/c", "a//c"}
    expect_hash = {"a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "a/b/d", "a//c"}
    expect_mixed = {"a/b", "a/b/c", "a/b/c/d", "a/b/d", "b/b/c"}
    for name, cl, exp in (("a/+/c", sub_plus, expect_plus), ("a/#", sub_hash, expect_hash),
                          ("+/b/#", sub_mixed, expect_mixed)):
        cl.wait_messages(len(exp), 5)
        time.sleep(0.2)
        got = [m.topic[len(base) + 1:] for m in cl.take_messages()]
        check(sorted(got) == sorted(exp),
              f"filter {name}: got {sorted(got)}, expected {sorted(exp)}")
    for c in (pub, sub_plus, sub_hash, sub_mixed):
        c.disconnect()


def scenario_overlapping_subscriptions():
    base = topic("ov", "x")
    sub = connected(uniq("sub-ov"))
    sub.subscribe(f"{base}/#", 1)
    sub.subscribe(f"{base}/y", 0)
    pub = connected(uniq("pub-ov"))
    n = 10
    for i in range(n):
        pub.publish(f"{base}/y", f"o-{i}", 1)
    sub.wait_messages(n, 5)
    time.sleep(0.5)
    msgs = sub.take_messages()
    payloads = [m.payload for m in msgs]
    check(set(payloads) == {f"o-{i}".encode() for i in range(n)}, f"missing messages: got {payloads}")
    check(len(msgs) == n, f"received {len(msgs)} copies for {n} messages (expected one copy each)")
    qos = [m.qos for m in msgs]
    if cfg.quirks == "mosquitto" and all(q == 0 for q in qos):
        note("overlapping_subscriptions", "mosquitto delivers the single copy at the QoS of the "
             "non-wildcard subscription (0), not the max QoS (1) required by MQTT-3.3.5-1; tolerated")
    else:
        check(all(q == 1 for q in qos), f"expected qos 1 (max of overlapping subs), got {qos}")
    pub.disconnect()
    sub.disconnect()


def _fresh_sub_get(t: str, expect: int, timeout: float) -> list[Msg]:
    s = connected(uniq("sub-ret"))
    s.subscribe(t, 1)
    s.wait_messages(expect, timeout) if expect else None
    time.sleep(0.3 if expect else timeout)
    msgs = s.take_messages()
    s.disconnect()
    return msgs


def scenario_retained():
    t = topic("retained")
    live = connected(uniq("sub-live"))
    live.subscribe(t, 1)
    pub = connected(uniq("pub-ret"))
    pub.publish(t, "v1", 1, retain=True)
    msgs = live.wait_messages(1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"v1", f"live subscriber: expected v1, got {msgs}")
    check(not msgs[0].retain, "live subscriber got retain=1 for a freshly published retained message")
    live.take_messages()

    msgs = _fresh_sub_get(t, 1, 5)
    check(len(msgs) == 1, f"new subscriber: expected 1 retained message, got {msgs}")
    check(msgs[0].payload == b"v1" and msgs[0].retain, f"new subscriber: expected v1 with retain=1, got {msgs[0]}")

    pub.publish(t, "v2", 1, retain=True)
    msgs = _fresh_sub_get(t, 1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"v2" and msgs[0].retain,
          f"after replace: expected only v2 with retain=1, got {msgs}")

    # retained at QoS 0 is also stored
    pub.publish(t, "v3", 0, retain=True)
    time.sleep(0.2)
    msgs = _fresh_sub_get(t, 1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"v3" and msgs[0].retain,
          f"qos0 retained: expected only v3 with retain=1, got {msgs}")

    pub.publish(t, b"", 1, retain=True)  # clear
    msgs = _fresh_sub_get(t, 0, 1.0)
    check(msgs == [], f"after clearing, new subscriber still got {msgs}")

    # wildcard subscription also receives retained messages
    t2 = topic("retained", "deep", "leaf")
    pub.publish(t2, "deep", 1, retain=True)
    msgs = _fresh_sub_get(topic("retained", "#"), 1, 5)
    check(len(msgs) == 1 and msgs[0].topic == t2 and msgs[0].retain,
          f"wildcard retained: expected {t2}, got {msgs}")
    pub.publish(t2, b"", 1, retain=True)

    # everything published on the topic (including the clearing empty message)
    # reached the already-subscribed client, always with retain=0
    msgs = live.wait_messages(3, 3)
    check([m.payload for m in msgs] == [b"v2", b"v3", b""],
          f"live subscriber: expected v2, v3, <empty>, got {msgs}")
    check(not any(m.retain for m in msgs), f"live subscriber got retain=1: {msgs}")
    pub.disconnect()
    live.disconnect()


def scenario_will_abrupt_close():
    wt = topic("will", "abrupt")
    watcher = connected(uniq("will-watch"))
    watcher.subscribe(wt, 1)
    raw = RawClient()
    raw.connect(uniq("will-raw"), keepalive=60, will=(wt, b"gone-abrupt", 1, False))
    time.sleep(0.2)
    check(watcher.take_messages() == [], "will published before the connection was lost")
    raw.abort()
    msgs = watcher.wait_messages(1, 5)
    check(len(msgs) == 1, f"expected the will message, got {msgs}")
    m = msgs[0]
    check(m.topic == wt and m.payload == b"gone-abrupt", f"wrong will message {m}")
    check(m.qos == 1, f"will delivered at qos {m.qos}, expected 1")
    check(not m.retain, "will (retain=False) delivered with retain=1")
    # paho-based variant: abruptly close the socket underneath a paho client
    wt2 = topic("will", "abrupt-paho")
    watcher.subscribe(wt2, 1)
    victim = PahoClient(uniq("will-paho"), will=(wt2, "gone-paho", 1, False))
    victim.connect()
    victim.c.loop_stop()
    victim._started = False
    sock = victim.c.socket()
    check(sock is not None, "paho client has no socket")
    sock.close()
    msgs = watcher.wait_messages(2, 5)
    check(len(msgs) == 2 and msgs[1].payload == b"gone-paho", f"paho abrupt close: expected will, got {msgs}")
    victim.disconnected.set()
    watcher.disconnect()


def scenario_will_not_sent_on_disconnect():
    wt = topic("will", "clean")
    watcher = connected(uniq("will-watch"))
    watcher.subscribe(wt, 1)
    c = PahoClient(uniq("will-clean"), will=(wt, "should-not-appear", 1, False))
    c.connect()
    c.disconnect()
    msgs = wait_silence(watcher, 1.5)
    check(msgs == [], f"will published after a clean DISCONNECT: {msgs}")
    watcher.disconnect()


def scenario_will_retained():
    wt = topic("will", "retained")
    watcher = connected(uniq("will-watch"))
    watcher.subscribe(wt, 1)
    raw = RawClient()
    raw.connect(uniq("will-raw-ret"), will=(wt, b"retained-will", 1, True))
    raw.abort()
    msgs = watcher.wait_messages(1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"retained-will", f"live watcher: expected will, got {msgs}")
    msgs = _fresh_sub_get(wt, 1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"retained-will" and msgs[0].retain,
          f"later subscriber: expected retained will, got {msgs}")
    # clean up the retained message
    cl = connected(uniq("will-clear"))
    cl.publish(wt, b"", 1, retain=True)
    cl.disconnect()
    watcher.disconnect()


def scenario_keepalive_will():
    wt = topic("will", "keepalive")
    watcher = connected(uniq("ka-watch"))
    watcher.subscribe(wt, 1)
    raw = RawClient()
    raw.connect(uniq("ka-raw"), keepalive=1, will=(wt, b"timed-out", 1, False))
    t0 = time.monotonic()
    # go silent (socket stays open): the broker must drop us after 1.5 x keepalive
    limit = 3.5
    if cfg.quirks == "mosquitto":
        limit = 10.0  # mosquitto 2.0.x checks keep-alives coarsely: observed 3.6-6.8 s for keepalive=1
    msgs = watcher.wait_messages(1, limit)
    elapsed = time.monotonic() - t0
    check(len(msgs) == 1 and msgs[0].payload == b"timed-out",
          f"no will within {limit} s of a silent keepalive=1 client: {msgs}")
    check(elapsed >= 0.9, f"will arrived too early ({elapsed:.2f}s): keep-alive enforced too strictly")
    if elapsed > 3.5:
        note("keepalive_will", f"will arrived after {elapsed:.1f}s (> 1.5 x keepalive + 2 s); tolerated for {cfg.quirks}")
    # the broker should have closed our socket
    assert raw.sock is not None
    raw.sock.settimeout(2.0)
    try:
        data = raw.sock.recv(16)
        check(data == b"", f"expected EOF on timed-out connection, got {data!r}")
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        raise ScenarioError("broker did not close the timed-out connection")
    raw.close()
    watcher.disconnect()


def scenario_persistent_session():
    t = topic("persist")
    cid = uniq("persist")
    sub = PahoClient(cid, clean_session=False)
    rc, sp = sub.connect()
    check(not sp, "first connect with a fresh client id reported session_present=1")
    sub.subscribe(t, 1)
    sub.disconnect()

    pub = connected(uniq("pub-persist"))
    n = 50
    infos = [pub.publish(t, f"p-{i}", 1, wait=False) for i in range(n)]
    deadline = time.monotonic() + 10
    for info in infos:
        info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        check(info.is_published(), f"publish mid={info.mid} not acknowledged")

    sub2 = PahoClient(cid, clean_session=False)
    rc, sp = sub2.connect()
    check(sp, "reconnect with clean_session=False: session_present=0")
    msgs = sub2.wait_messages(n, 10)
    time.sleep(0.3)
    msgs = sub2.take_messages()
    payloads = [m.payload for m in msgs]
    expected = [f"p-{i}".encode() for i in range(n)]
    check(len(payloads) >= n and set(payloads) == set(expected),
          f"received {len(set(payloads))}/{n} queued messages")
    check(len(payloads) == n, f"received {len(payloads)} messages, expected {n} (duplicates?)")
    check(payloads == expected, "queued messages out of order")
    check(all(m.qos == 1 for m in msgs), "queued messages not delivered at qos 1")
    # subscription still active without re-subscribing
    pub.publish(t, "after", 1)
    msgs = sub2.wait_messages(1, 5)
    check(any(m.payload == b"after" for m in msgs), "session subscription not active after resume")
    sub2.disconnect()
    # discard the session
    cleaner = PahoClient(cid, clean_session=True)
    cleaner.connect()
    cleaner.disconnect()
    pub.disconnect()


def scenario_clean_session_discards():
    t = topic("discard")
    cid = uniq("discard")
    sub = PahoClient(cid, clean_session=False)
    sub.connect()
    sub.subscribe(t, 1)
    sub.disconnect()
    pub = connected(uniq("pub-discard"))
    for i in range(10):
        pub.publish(t, f"q-{i}", 1)
    sub2 = PahoClient(cid, clean_session=True)
    rc, sp = sub2.connect()
    check(not sp, "clean_session=True reconnect reported session_present=1")
    msgs = wait_silence(sub2, 1.0)
    check(msgs == [], f"clean session received {len(msgs)} stale queued messages")
    # the old subscription must be gone too
    pub.publish(t, "late", 1)
    msgs = wait_silence(sub2, 0.5)
    check(msgs == [], f"clean session still has the old subscription: {msgs}")
    sub2.disconnect()
    # and no persistent session is left behind either
    sub3 = PahoClient(cid, clean_session=False)
    rc, sp = sub3.connect()
    check(not sp, "session_present=1 after the session was discarded by a clean connect")
    sub3.disconnect()
    PahoClient(cid, clean_session=True).connect()
    pub.disconnect()


def scenario_takeover():
    cid = uniq("takeover")
    t = topic("takeover")
    first = connected(cid)
    second = PahoClient(cid)
    second.connect()
    check(first.disconnected.wait(5), "first client was not disconnected after takeover")
    second.subscribe(t, 1)
    second.publish(t, "still-alive", 1)
    msgs = second.wait_messages(1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"still-alive", f"second client not working: {msgs}")
    time.sleep(0.5)
    check(second.c.is_connected() and not second.disconnected.is_set(),
          "second client was disconnected (ping-pong takeover?)")
    second.disconnect()


def scenario_empty_client_id():
    t = topic("empty-id")
    c = PahoClient("", clean_session=True)
    rc, sp = c.connect()
    check(not sp, "empty client id got session_present=1")
    c.subscribe(t, 1)
    c.publish(t, "hello", 1)
    msgs = c.wait_messages(1, 5)
    check(len(msgs) == 1 and msgs[0].payload == b"hello", f"empty-id client round trip failed: {msgs}")
    # two simultaneous empty-id clients must not take each other over
    c2 = PahoClient("", clean_session=True)
    c2.connect()
    time.sleep(0.3)
    check(not c.disconnected.is_set(), "second empty-id client took over the first one")
    c2.disconnect()
    c.disconnect()
    # empty id with clean_session=False must be rejected (identifier rejected = 2)
    raw = RawClient()
    try:
        raw.connect("", clean=False)
        raise ScenarioError("empty client id with clean_session=0 was accepted")
    except ScenarioError as e:
        msg = str(e)
        check("return code 2" in msg or "connection closed" in msg,
              f"empty id + clean_session=0: unexpected response: {msg}")
    except OSError:
        pass
    raw.close()


def scenario_mqtt31():
    t = topic("v31")
    c = PahoClient(uniq("v31")[:23], protocol=mqtt.MQTTv31)
    c.connect()
    check(c.subscribe(t, 2) == [2], "MQTT 3.1 subscription not granted qos 2")
    for q in (0, 1, 2):
        c.publish(t, f"v31-q{q}", q)
    msgs = c.wait_messages(3, 5)
    got = sorted((m.payload, m.qos) for m in msgs)
    check(got == [(b"v31-q0", 0), (b"v31-q1", 1), (b"v31-q2", 2)], f"MQTT 3.1 round trip: got {msgs}")
    # and 3.1 <-> 3.1.1 interop
    c311 = connected(uniq("v311"))
    c311.publish(t, "from-311", 1)
    msgs = c.wait_messages(4, 5)
    check(any(m.payload == b"from-311" for m in msgs), "MQTT 3.1 client did not receive a 3.1.1 publish")
    c311.disconnect()
    c.disconnect()


def scenario_p2p():
    dev = f"dev-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    t = f"cmd/p2p/{dev}"
    device = connected(dev)
    snoop = connected(uniq("snoop"))
    snoop.subscribe("cmd/#", 1)
    sender = connected(uniq("p2p-sender"))
    sender.publish(t, "do-it", 1)
    msgs = device.wait_messages(1, 5)
    check(len(msgs) == 1, f"device did not receive the p2p message: {msgs}")
    check(msgs[0].topic == t and msgs[0].payload == b"do-it", f"device got wrong message {msgs[0]}")
    check(msgs[0].qos == 1, f"p2p message delivered at qos {msgs[0].qos}, expected 1")
    leaked = wait_silence(snoop, 1.0)
    check(leaked == [], f"cmd/# subscriber saw the p2p message: {leaked}")
    for c in (sender, snoop, device):
        c.disconnect()


SCENARIOS = [
    ("qos0_pubsub", scenario_qos0_pubsub, 30, False),
    ("qos1_pubsub", scenario_qos1_pubsub, 30, False),
    ("qos2_pubsub", scenario_qos2_pubsub, 30, False),
    ("qos_downgrade", scenario_qos_downgrade, 20, False),
    ("wildcards", scenario_wildcards, 20, False),
    ("overlapping_subscriptions", scenario_overlapping_subscriptions, 15, False),
    ("retained", scenario_retained, 30, False),
    ("will_abrupt_close", scenario_will_abrupt_close, 20, False),
    ("will_not_sent_on_disconnect", scenario_will_not_sent_on_disconnect, 15, False),
    ("will_retained", scenario_will_retained, 20, False),
    ("keepalive_will", scenario_keepalive_will, 20, False),
    ("persistent_session", scenario_persistent_session, 30, False),
    ("clean_session_discards", scenario_clean_session_discards, 20, False),
    ("takeover", scenario_takeover, 15, False),
    ("empty_client_id", scenario_empty_client_id, 15, False),
    ("mqtt31", scenario_mqtt31, 15, False),
    ("p2p", scenario_p2p, 15, True),
]


if __name__ == "__main__":
    sys.exit(harness.main(SCENARIOS, doc=__doc__, label="paho"))
