#!/usr/bin/env node
// MQTT 5.0 interoperability scenarios for Vane, driven by MQTT.js (npm `mqtt`, 5.x).
//
// Prints one line per scenario: `PASS name`, `FAIL name: reason`,
// `SKIP name: reason` or `PENDING name: reason`, then a `# mqttjs: ...` summary.
// Exit status 1 if any scenario that ran failed.
//
// Scenarios for features Vane does not implement yet are written to the
// specification anyway and listed in PENDING below: they are reported as
// PENDING and not run, unless ALL=1, in which case they run (and count) like
// every other scenario. When a feature lands, delete its PENDING entry.
//
// Only ever talks to HOST:PORT (127.0.0.1 by default).
//
// Usage:
//   PORT=1883 [HOST=127.0.0.1] [ALL=1] [ONLY='name ...'] [QUIRKS=mosquitto] node scenarios.mjs
//   node scenarios.mjs --port 1883 [--all] [--list]
//   URL=ws://127.0.0.1:8080/mqtt node scenarios.mjs   (or --url): every client connects to
//     this URL instead (MQTT over WebSocket); names in the output get a suffix (@ws).

import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';

// Scenarios for features Vane does not implement yet: name -> reason.
const PENDING = {};

const argv = process.argv.slice(2);
const argValue = (flag) => {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
};
const HOST = argValue('--host') ?? process.env.HOST ?? '127.0.0.1';
const PORT = Number(argValue('--port') ?? process.env.PORT ?? 0);
const RUN_ALL = argv.includes('--all') || process.env.ALL === '1';
const ONLY = (process.env.ONLY ?? '').split(/\s+/).filter(Boolean);
const QUIRKS = argValue('--quirks') ?? process.env.QUIRKS ?? '';
const URL_ = argValue('--url') ?? process.env.URL ?? '';
const SUFFIX = URL_ ? `@${new URL(URL_).protocol.replace(':', '')}` : '';
const RUN_ID = randomBytes(5).toString('hex');
const CONNECT_TIMEOUT_MS = 5000;

class ScenarioError extends Error {}
class ScenarioSkip extends Error {}

function check(cond, msg) {
  if (!cond) throw new ScenarioError(msg);
}

const note = (name, text) => console.log(`NOTE ${name}: ${text}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const uniq = (tag) => `${tag}-${RUN_ID}-${randomBytes(3).toString('hex')}`;
const topic = (...parts) => ['interop5js', RUN_ID, ...parts].join('/');
const hex = (codes) => JSON.stringify((codes ?? []).map((c) => `0x${Number(c).toString(16)}`));

function show(v) {
  return JSON.stringify(v, (k, x) => {
    if (x && x.type === 'Buffer' && Array.isArray(x.data)) return `<${Buffer.from(x.data).toString('hex')}>`;
    return x;
  });
}

// Every connection opened by the current scenario, force-closed after it.
let RESOURCES = [];

// One MQTT.js connection (automatic reconnection disabled).
class Conn {
  constructor(clientId, { version = 5, clean = true, properties, will, keepalive = 30 } = {}) {
    this.clientId = clientId;
    this.messages = []; // {topic, payload, qos, retain, props, at}
    this.raw = []; // PUBLISH packets as received, before MQTT.js resolves topic aliases
    this.acks = new Map(); // "puback:<id>" / "pubrec:<id>" -> reason code
    this.waiters = new Set();
    this.closed = false;
    this.handler = null;
    this.serverDisconnect = null;
    this.connack = null;
    const opts = {
      protocolVersion: version,
      // MQTT 3.1 (over WebSocket: subprotocol mqttv3.1)
      ...(version === 3 ? { protocolId: 'MQIsdp' } : {}),
      clientId,
      clean,
      keepalive,
      reconnectPeriod: 0,
      connectTimeout: CONNECT_TIMEOUT_MS,
      resubscribe: false,
      properties,
      will,
    };
    this.client = URL_ ? mqtt.connect(URL_, opts) : mqtt.connect({ host: HOST, port: PORT, protocol: 'mqtt', ...opts });
    RESOURCES.push(this);
    const c = this.client;
    c.on('error', (e) => {
      this.lastError = e;
      this._notify();
    });
    c.on('close', () => {
      this.closed = true;
      this._notify();
    });
    c.on('packetreceive', (p) => {
      if (p.cmd === 'puback' || p.cmd === 'pubrec') this.acks.set(`${p.cmd}:${p.messageId}`, p.reasonCode ?? 0);
      if (p.cmd === 'publish') {
        this.raw.push({ topic: p.topic.toString(), alias: p.properties?.topicAlias, payload: Buffer.from(p.payload) });
      }
      if (p.cmd === 'disconnect') this.serverDisconnect = p.reasonCode ?? 0;
    });
    c.on('message', (t, payload, packet) => {
      const m = {
        topic: t,
        payload: Buffer.from(payload),
        qos: packet.qos,
        retain: Boolean(packet.retain),
        props: packet.properties ?? {},
        at: Date.now(),
      };
      this.messages.push(m);
      this._notify();
      if (this.handler) this.handler(this, m);
    });
    this.ready = new Promise((resolve, reject) => {
      const fail = (why) => {
        clearTimeout(timer);
        reject(new ScenarioError(`${clientId}: ${why}`));
      };
      const timer = setTimeout(() => fail(`no CONNACK within ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS + 500);
      c.once('connect', (p) => {
        clearTimeout(timer);
        this.connack = p;
        resolve(p);
      });
      c.once('error', (e) => fail(`connect failed: ${e.message}`));
      c.once('close', () => {
        if (!this.connack) fail('connection closed before CONNACK');
      });
    });
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  // Resolves true as soon as pred() holds, false after ms.
  waitUntil(pred, ms) {
    if (pred()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (v) => {
        clearTimeout(timer);
        this.waiters.delete(w);
        resolve(v);
      };
      const w = () => {
        if (pred()) done(true);
      };
      const timer = setTimeout(() => done(pred()), ms);
      this.waiters.add(w);
    });
  }

  async waitMessages(n, ms) {
    await this.waitUntil(() => this.messages.length >= n, ms);
    return [...this.messages];
  }

  async waitFor(pred, ms) {
    await this.waitUntil(() => this.messages.some(pred), ms);
    return [...this.messages];
  }

  take() {
    const m = this.messages;
    this.messages = [];
    return m;
  }

  get props() {
    return this.connack?.properties ?? {};
  }

  get sessionPresent() {
    return Boolean(this.connack?.sessionPresent);
  }

  // Subscribe to one filter, returns the SUBACK reason codes.
  subscribe(filter, opts = {}, { expectOk = true, ms = 5000 } = {}) {
    const o = { qos: 1, ...opts };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new ScenarioError(`no SUBACK for ${filter} within ${ms} ms`)), ms);
      this.client.subscribe(filter, o, (err, subs, packet) => {
        clearTimeout(timer);
        const codes = packet?.granted;
        if (!codes) {
          reject(new ScenarioError(`subscribe ${filter}: ${err ? err.message : 'no SUBACK packet'}`));
          return;
        }
        if (expectOk && codes.some((c) => c >= 0x80)) {
          reject(new ScenarioError(`subscription to ${filter} refused: reason codes ${hex(codes)}`));
          return;
        }
        resolve(codes);
      });
    });
  }

  // Publish; for QoS 1 returns the PUBACK reason code, for QoS 2 the PUBREC one.
  publish(t, payload, { qos = 1, retain = false, properties } = {}, ms = 10000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new ScenarioError(`publish to ${t} (qos ${qos}) not acknowledged within ${ms} ms`)),
        ms,
      );
      this.client.publish(t, payload, { qos, retain, properties }, (err, packet) => {
        clearTimeout(timer);
        if (err) {
          reject(new ScenarioError(`publish to '${t}' failed: ${err.message}`));
          return;
        }
        if (qos === 0) return resolve(null);
        const key = `${qos === 1 ? 'puback' : 'pubrec'}:${packet?.messageId}`;
        resolve(this.acks.has(key) ? this.acks.get(key) : null);
      });
    });
  }

  // Clean DISCONNECT (optionally with properties), wait for the socket to close.
  end(properties, ms = 5000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new ScenarioError(`${this.clientId}: end() did not finish`)), ms);
      this.client.end(false, properties ? { reasonCode: 0, properties } : {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // Drop the TCP connection without a DISCONNECT packet.
  abort() {
    this.client.end(true);
  }
}

async function open(clientId, opts = {}) {
  const c = new Conn(clientId, opts);
  await c.ready;
  return c;
}

const openTag = (tag, opts) => open(uniq(tag), opts);

async function dropSession(clientId) {
  const c = await open(clientId, { clean: true });
  await c.end();
}

const userPropsEqual = (a, b) => show(Object.entries(a ?? {})) === show(Object.entries(b ?? {}));
const same = (a, b) => show(a) === show(b);

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

async function connackProperties() {
  const c = await open(uniq('connack'), {
    properties: { receiveMaximum: 10, maximumPacketSize: 65536, topicAliasMaximum: 5, sessionExpiryInterval: 0 },
  });
  check(!c.sessionPresent, 'clean start with a fresh client id reported session_present=1');
  const p = c.props;
  note('mqttjs_connack_properties', show(p));
  check(p.topicAliasMaximum >= 1, `Topic Alias Maximum ${p.topicAliasMaximum}: absent or 0 means no topic aliases`);
  check(p.receiveMaximum === undefined || (p.receiveMaximum >= 1 && p.receiveMaximum <= 65535),
    `Receive Maximum ${p.receiveMaximum} out of range`);
  check(p.maximumPacketSize === undefined || p.maximumPacketSize >= 1024,
    `Maximum Packet Size ${p.maximumPacketSize} is implausibly small`);
  // mqtt-packet decodes byte properties as booleans
  const flag = (v) => (v === undefined ? undefined : Number(v));
  check([undefined, 1].includes(flag(p.retainAvailable)), `Retain Available = ${p.retainAvailable}`);
  check([undefined, 1].includes(flag(p.wildcardSubscriptionAvailable)),
    `Wildcard Subscription Available = ${p.wildcardSubscriptionAvailable}`);
  check([undefined, 1].includes(flag(p.subscriptionIdentifiersAvailable)),
    `Subscription Identifier Available = ${p.subscriptionIdentifiersAvailable}`);
  check(p.maximumQoS === undefined || p.maximumQoS === 1, `Maximum QoS = ${p.maximumQoS}: the scenarios need QoS 1`);
  check(p.assignedClientIdentifier === undefined, 'Assigned Client Identifier sent although the client gave one');
  await c.end();

  const ids = [];
  for (let i = 0; i < 2; i++) {
    const e = await open('', { clean: true });
    const aci = e.props.assignedClientIdentifier;
    check(aci, `empty client id: no Assigned Client Identifier in CONNACK (${show(e.props)})`);
    ids.push(aci);
  }
  check(ids[0] !== ids[1], `two empty-id clients were assigned the same id ${ids[0]}`);
}

async function userProperties() {
  const t = topic('userprops');
  // MQTT.js represents user properties as an object; a repeated name is an array
  const ups = { k1: 'v1', dup: ['first', 'second', 'first'], k2: 'ä ö ü — ✓' };
  const sub = await openTag('up-sub');
  await sub.subscribe(t);
  const pub = await openTag('up-pub');
  await pub.publish(t, 'with-props', { properties: { userProperties: ups } });
  await pub.publish(t, 'retained-with-props', { retain: true, properties: { userProperties: { r: ['1', '2'] } } });
  const msgs = await sub.waitMessages(2, 5000);
  check(msgs.length === 2, `expected 2 messages, got ${show(msgs)}`);
  check(userPropsEqual(msgs[0].props.userProperties, ups),
    `user properties: sent ${show(ups)}, received ${show(msgs[0].props.userProperties)}`);
  check(userPropsEqual(msgs[1].props.userProperties, { r: ['1', '2'] }),
    `retained publish: received ${show(msgs[1].props.userProperties)}`);
  const late = await openTag('up-late');
  await late.subscribe(t);
  const lm = await late.waitMessages(1, 5000);
  check(lm.length === 1 && lm[0].retain, `new subscriber: expected the retained message, got ${show(lm)}`);
  check(userPropsEqual(lm[0].props.userProperties, { r: ['1', '2'] }),
    `retained message: user properties ${show(lm[0].props.userProperties)}`);
  await pub.publish(t, '', { retain: true });
}

async function topicAliasClient() {
  const base = topic('alias-in');
  const t1 = `${base}/one`;
  const t2 = `${base}/two`;
  const sub = await openTag('ta-sub');
  await sub.subscribe(`${base}/#`);
  const pub = await openTag('ta-pub');
  const tam = pub.props.topicAliasMaximum ?? 0;
  check(tam >= 1, `server Topic Alias Maximum is ${tam}: cannot test client-to-server aliases`);
  const sent = [[t1, 'a1', 1], ['', 'a2', 1], [t2, 'b1', 1], ['', 'b2', 1]];
  const expected = [[t1, 'a1'], [t1, 'a2'], [t2, 'b1'], [t2, 'b2']];
  if (tam >= 2) {
    sent.push([t1, 'c1', 2], ['', 'c2', 2], ['', 'b3', 1]);
    expected.push([t1, 'c1'], [t1, 'c2'], [t2, 'b3']);
  }
  for (const [t, payload, alias] of sent) {
    await pub.publish(t, payload, { properties: { topicAlias: alias } });
  }
  await pub.publish(t1, 'plain');
  expected.push([t1, 'plain']);
  const msgs = await sub.waitMessages(expected.length, 5000);
  const got = msgs.map((m) => [m.topic, m.payload.toString()]);
  check(same(got, expected), `aliased publishes ${show(sent)}: subscriber expected ${show(expected)}, got ${show(got)}`);
  const aliased = sub.raw.filter((r) => r.alias !== undefined);
  check(aliased.length === 0, `subscriber that allows no topic aliases received aliases: ${show(aliased)}`);
  check(!pub.closed, `publisher was disconnected (reason ${pub.serverDisconnect})`);
}

async function requestResponse() {
  const reqT = topic('rr', 'request');
  const respT = topic('rr', 'response', randomBytes(3).toString('hex'));
  const seen = [];
  const responder = await openTag('rr-responder');
  responder.handler = (conn, m) => {
    const rt = m.props.responseTopic;
    const cd = m.props.correlationData;
    seen.push([rt, cd ? Buffer.from(cd).toString('hex') : null]);
    if (rt) {
      conn.client.publish(rt, Buffer.concat([Buffer.from('re:'), m.payload]), {
        qos: 1,
        properties: cd ? { correlationData: cd } : undefined,
      });
    }
  };
  await responder.subscribe(reqT);
  const requester = await openTag('rr-requester');
  await requester.subscribe(respT);
  const corrs = [Buffer.from([0x00, 0x01, 0x63, 0xff, 0xfe]), Buffer.from('corr-2')];
  for (const [i, cd] of corrs.entries()) {
    await requester.publish(reqT, `q${i}`, { properties: { responseTopic: respT, correlationData: cd } });
  }
  const msgs = await requester.waitMessages(2, 5000);
  const want = corrs.map((cd) => [respT, cd.toString('hex')]);
  check(same(seen.slice(0, 2), want), `responder expected (response topic, correlation data) ${show(want)}, got ${show(seen)}`);
  check(msgs.length === 2, `requester expected 2 replies, got ${show(msgs)}`);
  const got = Object.fromEntries(msgs.map((m) => [Buffer.from(m.props.correlationData ?? []).toString('hex'), m.payload.toString()]));
  const exp = { [corrs[0].toString('hex')]: 're:q0', [corrs[1].toString('hex')]: 're:q1' };
  check(same(got, exp), `replies by correlation data: ${show(got)}, expected ${show(exp)}`);
  check(msgs.every((m) => m.topic === respT), `replies on the wrong topic: ${show(msgs)}`);
}

async function messageExpiry() {
  const t = topic('expiry');
  const cid = uniq('exp-sub');
  const sub = await open(cid, { clean: true, properties: { sessionExpiryInterval: 60 } });
  await sub.subscribe(t);
  await sub.end();
  const pub = await openTag('exp-pub');
  await pub.publish(t, 'short-lived', { properties: { messageExpiryInterval: 2 } });
  await pub.publish(t, 'long-lived', { properties: { messageExpiryInterval: 60 } });
  await sleep(3000);
  const sub2 = await open(cid, { clean: false, properties: { sessionExpiryInterval: 60 } });
  check(sub2.sessionPresent, 'reconnect within the session expiry interval: session_present=0');
  await sub2.waitFor((m) => m.payload.toString() === 'long-lived', 5000);
  await sleep(300);
  const msgs = sub2.take();
  const payloads = msgs.map((m) => m.payload.toString());
  check(!payloads.includes('short-lived'),
    `message published with Message Expiry Interval 2 delivered after 3 s offline: ${show(payloads)}`);
  check(same(payloads, ['long-lived']), `expected only the long-lived message, got ${show(payloads)}`);
  const mei = msgs[0].props.messageExpiryInterval;
  check(mei !== undefined, 'Message Expiry Interval missing on the delivered message (published with 60)');
  check(mei > 0 && mei <= 60, `remaining Message Expiry Interval ${mei}, expected 1..60`);
  if (mei > 58) note('mqttjs_message_expiry', `remaining expiry ${mei} after ~3 s in the queue: not decremented`);
  await sub2.end({ sessionExpiryInterval: 0 });
}

async function payloadFormatContentType() {
  const t = topic('pfi');
  const sub = await openTag('pfi-sub');
  await sub.subscribe(t);
  const pub = await openTag('pfi-pub');
  const doc = Buffer.from(JSON.stringify({ temp: 21.5, unit: '°C' }));
  await pub.publish(t, doc, { properties: { payloadFormatIndicator: true, contentType: 'application/json; charset=utf-8' } });
  await pub.publish(t, Buffer.from([0, 255, 1]), { properties: { payloadFormatIndicator: false, contentType: 'application/octet-stream' } });
  await pub.publish(t, 'bare');
  const msgs = await sub.waitMessages(3, 5000);
  check(msgs.length === 3, `expected 3 messages, got ${show(msgs)}`);
  const pfi = (m) => (m.props.payloadFormatIndicator === undefined ? undefined : Number(m.props.payloadFormatIndicator));
  check(msgs[0].payload.equals(doc), `payload changed: ${msgs[0].payload.toString('hex')}`);
  check(pfi(msgs[0]) === 1, `Payload Format Indicator 1 not forwarded: ${show(msgs[0].props)}`);
  check(msgs[0].props.contentType === 'application/json; charset=utf-8', `Content Type not forwarded: ${show(msgs[0].props)}`);
  check([undefined, 0].includes(pfi(msgs[1])), `Payload Format Indicator 0 became ${show(msgs[1].props)}`);
  check(msgs[1].props.contentType === 'application/octet-stream', `Content Type not forwarded: ${show(msgs[1].props)}`);
  check([undefined, 0].includes(pfi(msgs[2])) && msgs[2].props.contentType === undefined,
    `message without format/content type got some: ${show(msgs[2].props)}`);
}

async function subscriptionIdentifiers() {
  const base = topic('subid');
  const sub = await openTag('sid-sub');
  await sub.subscribe(`${base}/+`, { properties: { subscriptionIdentifier: 7 } });
  await sub.subscribe(`${base}/#`, { properties: { subscriptionIdentifier: 16384 } });
  const plain = await openTag('sid-plain');
  await plain.subscribe(`${base}/#`);
  const pub = await openTag('sid-pub');
  await pub.publish(`${base}/x`, 'both');
  await pub.publish(`${base}/a/b`, 'deep');
  await sub.subscribe(`${base}/+`, { properties: { subscriptionIdentifier: 9 } }); // replaces: new identifier
  await pub.publish(`${base}/y`, 'replaced');
  await pub.publish(`${base}/z/end`, 'end');
  await sub.waitFor((m) => m.payload.toString() === 'end', 5000);
  await sleep(200);
  const msgs = sub.take();
  const ids = (m) => [].concat(m.props.subscriptionIdentifier ?? []).sort((a, b) => a - b);
  const idsOf = (payload) => msgs.filter((m) => m.payload.toString() === payload).map(ids);
  for (const [payload, want] of [['both', [7, 16384]], ['replaced', [9, 16384]]]) {
    const copies = idsOf(payload);
    check(copies.length > 0, `${payload} not received: ${show(msgs)}`);
    if (copies.length === 1) {
      check(same(copies[0], want), `${payload}: one copy with identifiers ${show(copies[0])}, expected ${show(want)}`);
    } else {
      check(copies.length === 2 && copies.every((c) => c.length === 1) && same(copies.flat().sort((a, b) => a - b), want),
        `${payload}: copies with identifiers ${show(copies)}, expected ${show(want)} (one each)`);
    }
  }
  check(same(idsOf('deep'), [[16384]]), `deep: expected one copy with [16384], got ${show(idsOf('deep'))}`);
  check(same(idsOf('end'), [[16384]]), `end: expected one copy with [16384], got ${show(idsOf('end'))}`);
  const pm = await plain.waitFor((m) => m.payload.toString() === 'end', 5000);
  const withIds = pm.filter((m) => m.props.subscriptionIdentifier !== undefined);
  check(pm.length === 4 && withIds.length === 0,
    `subscriber without identifiers: expected 4 messages without any, got ${show(pm.map((m) => [m.payload.toString(), m.props]))}`);
}

async function noLocal() {
  const t = topic('nolocal');
  const a = await openTag('nl-a');
  await a.subscribe(t, { nl: true });
  const b = await openTag('nl-b');
  await b.subscribe(t);
  await a.publish(t, 'from-a');
  await b.publish(t, 'from-b');
  const bm = (await b.waitMessages(2, 5000)).map((m) => m.payload.toString());
  check(same(bm, ['from-a', 'from-b']), `other subscriber: expected from-a, from-b, got ${show(bm)}`);
  await a.waitFor((m) => m.payload.toString() === 'from-b', 5000);
  await sleep(200);
  const am = a.take().map((m) => m.payload.toString());
  check(same(am, ['from-b']), `No Local subscriber: expected only from-b (not its own from-a), got ${show(am)}`);
}

async function retainAsPublished() {
  const t = topic('rap');
  const keep = await openTag('rap-1');
  await keep.subscribe(t, { rap: true });
  const clear = await openTag('rap-0');
  await clear.subscribe(t, { rap: false });
  const pub = await openTag('rap-pub');
  await pub.publish(t, 'retained', { retain: true });
  await pub.publish(t, 'normal');
  const km = (await keep.waitMessages(2, 5000)).map((m) => [m.payload.toString(), m.retain]);
  const cm = (await clear.waitMessages(2, 5000)).map((m) => [m.payload.toString(), m.retain]);
  check(same(km, [['retained', true], ['normal', false]]),
    `Retain As Published=1: expected retained(retain=1), normal(retain=0), got ${show(km)}`);
  check(same(cm, [['retained', false], ['normal', false]]),
    `Retain As Published=0: expected retain=0 on live messages, got ${show(cm)}`);
  await pub.publish(t, '', { retain: true });
}

async function retainHandling() {
  const t = topic('rh');
  const pub = await openTag('rh-pub');
  await pub.publish(t, 'kept', { retain: true });
  const s0 = await openTag('rh-0');
  await s0.subscribe(t, { rh: 0 });
  const s1 = await openTag('rh-1');
  await s1.subscribe(t, { rh: 1 });
  const s2 = await openTag('rh-2');
  await s2.subscribe(t, { rh: 2 });
  const fmt = (ms) => ms.map((m) => [m.payload.toString(), m.retain]);
  check(same(fmt(await s0.waitMessages(1, 5000)), [['kept', true]]), `Retain Handling 0: got ${show(fmt(s0.messages))}`);
  check(same(fmt(await s1.waitMessages(1, 5000)), [['kept', true]]),
    `Retain Handling 1, new subscription: got ${show(fmt(s1.messages))}`);
  await s0.subscribe(t, { rh: 0 }); // retained again on every subscribe
  await s1.subscribe(t, { rh: 1 }); // subscription exists: no retained message
  await pub.publish(t, 'live'); // sentinel
  for (const [cl, want, what] of [
    [s0, [['kept', true], ['kept', true], ['live', false]], 'Retain Handling 0'],
    [s1, [['kept', true], ['live', false]], 'Retain Handling 1'],
    [s2, [['live', false]], 'Retain Handling 2'],
  ]) {
    await cl.waitFor((m) => m.payload.toString() === 'live', 5000);
    await sleep(50);
    const got = fmt(cl.take());
    check(same(got, want), `${what}: expected ${show(want)}, got ${show(got)}`);
  }
  await pub.publish(t, '', { retain: true });
}

async function pubackNoSubscribers() {
  const t = topic('nosub', randomBytes(3).toString('hex'));
  const pub = await openTag('ns-pub');
  let rc = await pub.publish(t, 'nobody', { qos: 1 });
  check(rc === 0x10, `QoS 1 publish to a topic without subscribers: PUBACK reason ${rc}, expected 0x10`);
  rc = await pub.publish(t, 'nobody-2', { qos: 2 });
  if (rc === 0 && QUIRKS === 'mosquitto') {
    // 0x10 is a MAY (MQTT 5.0 §3.5.2.1): mosquitto 2.0 uses it in PUBACK but not in PUBREC
    note('mqttjs_puback_no_subscribers', 'QoS 2 without subscribers: PUBREC 0x00, not 0x10; tolerated for mosquitto');
  } else {
    check(rc === 0x10, `QoS 2 publish to a topic without subscribers: PUBREC reason ${rc}, expected 0x10`);
  }
  const sub = await openTag('ns-sub');
  await sub.subscribe(t, { qos: 2 });
  rc = await pub.publish(t, 'somebody', { qos: 1 });
  check(rc === 0, `QoS 1 publish with a subscriber: PUBACK reason ${rc}, expected 0x00`);
  rc = await pub.publish(t, 'somebody-2', { qos: 2 });
  check(rc === 0, `QoS 2 publish with a subscriber: PUBREC reason ${rc}, expected 0x00`);
  await sub.waitMessages(2, 5000);
}

async function v311V5Interop() {
  const t = topic('mixed');
  const s311 = await openTag('mx-s311', { version: 4 });
  await s311.subscribe(t);
  const s5 = await openTag('mx-s5');
  await s5.subscribe(t);
  const p5 = await openTag('mx-p5');
  const p311 = await openTag('mx-p311', { version: 4 });
  await p5.publish(t, 'from-v5', {
    properties: {
      userProperties: { a: 'b' },
      contentType: 'text/plain',
      payloadFormatIndicator: true,
      messageExpiryInterval: 60,
      responseTopic: topic('mixed', 'resp'),
      correlationData: Buffer.from('cd'),
    },
  });
  await p311.publish(t, 'from-v311');
  const fmt = (ms) => ms.map((m) => [m.topic, m.payload.toString(), m.qos]);
  const want = [[t, 'from-v5', 1], [t, 'from-v311', 1]];
  const m311 = await s311.waitMessages(2, 5000);
  check(same(fmt(m311), want), `3.1.1 subscriber: expected ${show(want)}, got ${show(fmt(m311))}`);
  const m5 = await s5.waitMessages(2, 5000);
  check(same(fmt(m5), want), `5.0 subscriber: expected ${show(want)}, got ${show(fmt(m5))}`);
  check(userPropsEqual(m5[0].props.userProperties, { a: 'b' }) && m5[0].props.contentType === 'text/plain',
    `5.0 subscriber: properties of the 5.0 publish lost: ${show(m5[0].props)}`);
  for (const name of ['userProperties', 'contentType', 'responseTopic', 'correlationData', 'messageExpiryInterval']) {
    check(m5[1].props[name] === undefined, `5.0 subscriber: the 3.1.1 publish arrived with ${name}: ${show(m5[1].props)}`);
  }
}

async function sessionExpiryZero() {
  const t = topic('sez');
  const cid = uniq('sez');
  const c = await open(cid, { clean: false }); // no Session Expiry Interval: ends with the connection
  check(!c.sessionPresent, 'fresh client id reported session_present=1');
  await c.subscribe(t);
  await c.end();
  const pub = await openTag('sez-pub');
  await pub.publish(t, 'while-away');
  const c2 = await open(cid, { clean: false });
  check(!c2.sessionPresent, 'Session Expiry Interval absent (0): session still present after DISCONNECT');
  await sleep(300);
  check(c2.take().length === 0, 'queued messages delivered for a session that should have ended');
  await c2.end();
}

async function sharedSubscriptionAdvertised() {
  const c = await openTag('share-adv');
  const avail = c.props.sharedSubscriptionAvailable;
  const codes = await c.subscribe(`$share/g${RUN_ID}/${topic('share-adv')}`, {}, { expectOk: false });
  if (avail !== undefined && !avail) {
    check(same(codes, [0x9e]), `CONNACK says Shared Subscription Available=0, SUBACK gave ${hex(codes)}, expected 0x9e`);
  } else {
    check(codes[0] < 0x80, `CONNACK advertises shared subscriptions (${avail}), SUBACK refused: ${hex(codes)}`);
  }
}

// ----- scenarios for features listed in PENDING -----------------------------

async function sharedSubscription() {
  const t = topic('shared');
  const group = `g${RUN_ID}`;
  const m1 = await openTag('sh-m1');
  const m2 = await openTag('sh-m2');
  for (const m of [m1, m2]) {
    const codes = await m.subscribe(`$share/${group}/${t}`, {}, { expectOk: false });
    check(same(codes, [1]), `SUBACK for $share/${group}/${t}: ${hex(codes)}, expected [0x01]`);
  }
  const normal = await openTag('sh-normal');
  await normal.subscribe(t);
  const pub = await openTag('sh-pub');
  const n = 10;
  for (let i = 0; i < n; i++) await pub.publish(t, `s-${i}`);
  await normal.waitMessages(n, 5000);
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && m1.messages.length + m2.messages.length < n) await sleep(50);
  await sleep(300);
  const a = m1.take();
  const b = m2.take();
  const pa = a.map((m) => m.payload.toString());
  const pb = b.map((m) => m.payload.toString());
  const every = [...pa, ...pb];
  const expected = Array.from({ length: n }, (_, i) => `s-${i}`);
  check(same([...new Set(every)].sort(), [...expected].sort()), `group lost messages: member 1 got ${show(pa)}, member 2 got ${show(pb)}`);
  check(every.length === n, `group got duplicates: member 1 got ${show(pa)}, member 2 got ${show(pb)}`);
  check(pa.length > 0 && pb.length > 0, `messages not split: member 1 got ${pa.length}, member 2 got ${pb.length}`);
  check([...a, ...b].every((m) => m.topic === t), `shared delivery with the wrong topic: ${show([...a, ...b].slice(0, 2))}`);
  const nm = normal.take().map((m) => m.payload.toString()).sort();
  check(same(nm, [...expected].sort()), `non-shared subscriber got ${nm.length}/${n}`);
}

async function sessionExpiry() {
  const t = topic('sexp');
  const shortId = uniq('sexp-1s');
  const longId = uniq('sexp-60s');
  for (const [cid, exp] of [[shortId, 1], [longId, 60]]) {
    const c = await open(cid, { clean: true, properties: { sessionExpiryInterval: exp } });
    await c.subscribe(t);
    await c.end();
  }
  await sleep(2000);
  const pub = await openTag('sexp-pub');
  await pub.publish(t, 'after-expiry');
  const c = await open(shortId, { clean: false, properties: { sessionExpiryInterval: 1 } });
  check(!c.sessionPresent, 'session with Session Expiry Interval 1 still present 2 s after DISCONNECT');
  await sleep(300);
  check(c.take().length === 0, 'expired session still received messages');
  await c.end({ sessionExpiryInterval: 0 });
  const l = await open(longId, { clean: false, properties: { sessionExpiryInterval: 60 } });
  check(l.sessionPresent, 'session with Session Expiry Interval 60 gone 2 s after DISCONNECT');
  const msgs = (await l.waitMessages(1, 5000)).map((m) => m.payload.toString());
  check(same(msgs, ['after-expiry']), `surviving session: expected after-expiry, got ${show(msgs)}`);
  await l.end({ sessionExpiryInterval: 0 });
}

async function willDelay() {
  const wt = topic('willdelay');
  const watcher = await openTag('wd-watch');
  await watcher.subscribe(`${wt}/#`);
  const delay = 2;
  const lateId = uniq('wd-late');
  const cancelId = uniq('wd-cancel');
  const victims = [];
  for (const [cid, what] of [[lateId, 'late'], [cancelId, 'cancelled']]) {
    victims.push(await open(cid, {
      clean: true,
      properties: { sessionExpiryInterval: 30 },
      will: { topic: `${wt}/${what}`, payload: Buffer.from(`will-${what}`), qos: 1, retain: false, properties: { willDelayInterval: delay } },
    }));
  }
  const t0 = Date.now();
  for (const v of victims) v.abort();
  await sleep(500);
  // resuming the session before the delay has passed cancels the will [MQTT-3.1.3-9]
  const back = await open(cancelId, { clean: false, properties: { sessionExpiryInterval: 30 } });
  check(back.sessionPresent, 'reconnect within the session expiry: session_present=0');
  const early = watcher.take();
  check(early.length === 0, `will published before its delay of ${delay}s: ${early
    .map((m) => `${m.payload} ${((m.at - t0) / 1000).toFixed(1)}s after the connection was lost`).join(', ')}`);
  const msgs = await watcher.waitFor((m) => m.payload.toString() === 'will-late', (delay + 3) * 1000);
  const late = msgs.filter((m) => m.payload.toString() === 'will-late');
  check(late.length > 0, `delayed will not published within ${delay + 3}s: ${show(msgs.map((m) => m.payload.toString()))}`);
  const elapsed = (late[0].at - t0) / 1000;
  check(elapsed >= delay - 0.5, `delayed will published ${elapsed.toFixed(1)}s after the connection was lost, delay is ${delay}s`);
  await sleep(Math.max(0, (delay + 1) * 1000 - (Date.now() - t0)));
  const cancelled = watcher.take().filter((m) => m.payload.toString() === 'will-cancelled');
  check(cancelled.length === 0, 'will published although the session was resumed within the delay');
  await back.end({ sessionExpiryInterval: 0 });
  await dropSession(lateId);
}

async function serverTopicAlias() {
  const base = topic('alias-out');
  const t1 = `${base}/one`;
  const t2 = `${base}/two`;
  const sub = await openTag('sta-sub', { properties: { topicAliasMaximum: 10 } });
  await sub.subscribe(`${base}/#`);
  const pub = await openTag('sta-pub');
  const expected = [];
  for (let i = 0; i < 4; i++) {
    for (const t of [t1, t2]) {
      const payload = `${t.slice(-3)}-${i}`;
      await pub.publish(t, payload);
      expected.push([t, payload]);
    }
  }
  const msgs = await sub.waitMessages(expected.length, 5000);
  // MQTT.js resolved the aliases: the application sees full topics
  const got = msgs.map((m) => [m.topic, m.payload.toString()]);
  check(same(got, expected), `messages as resolved by MQTT.js ${show(got)}, expected ${show(expected)}`);
  check(!sub.closed, `subscriber disconnected (reason ${sub.serverDisconnect}, error ${sub.lastError?.message})`);
  const used = sub.raw.filter((r) => r.alias !== undefined);
  const aliasOnly = used.filter((r) => r.topic === '');
  check(used.every((r) => r.alias >= 1 && r.alias <= 10), `server used topic aliases outside 1..10: ${show(used)}`);
  if (used.length === 0 && QUIRKS === 'mosquitto') {
    // using topic aliases towards a client is optional (MQTT 5.0 §3.3.2.3.4): mosquitto 2.0 never does
    throw new ScenarioSkip('mosquitto 2.0 does not send topic aliases to clients (optional feature)');
  }
  check(used.length > 0, `no PUBLISH used a topic alias although the client allowed 10 (${sub.raw.length} messages)`);
  check(aliasOnly.length > 0, `topic aliases set (${used.length}) but never used alone (empty topic)`);
}

// Basics, run over TCP and over WebSocket (URL=ws://...).
async function connectVersion(version) {
  // MQTT 3.1 servers may refuse client ids over 23 characters: keep them short.
  const id = version === 3 ? `v31-${randomBytes(6).toString('hex')}` : uniq(`connect-v${version}`);
  const c = await open(id, { version });
  check((c.connack.reasonCode ?? c.connack.returnCode ?? 0) === 0, `CONNACK ${show(c.connack)}`);
  await c.end();
}

async function qos1RoundTrip() {
  const t = topic('basic', 'qos1');
  const sub = await openTag('rt-sub');
  await sub.subscribe(t, { qos: 1 });
  const pub = await openTag('rt-pub');
  await pub.publish(t, 'round trip', { qos: 1 });
  const [m] = await sub.waitMessages(1, 5000);
  check(m.payload.toString() === 'round trip' && m.qos === 1, `expected 'round trip' at QoS 1, got ${show(m)}`);
}

async function retainedBasic() {
  const t = topic('basic', 'retained');
  const pub = await openTag('ret-pub');
  await pub.publish(t, 'kept', { qos: 1, retain: true });
  const sub = await openTag('ret-sub');
  await sub.subscribe(t, { qos: 1 });
  const [m] = await sub.waitMessages(1, 5000);
  check(m.payload.toString() === 'kept' && m.retain, `expected the retained message, got ${show(m)}`);
  await pub.publish(t, '', { qos: 1, retain: true });
}

async function willBasic() {
  const t = topic('basic', 'will');
  const watcher = await openTag('will-watch');
  await watcher.subscribe(t, { qos: 1 });
  const victim = await openTag('will-victim', { will: { topic: t, payload: Buffer.from('gone'), qos: 1, retain: false } });
  victim.abort();
  const [m] = await watcher.waitMessages(1, 5000);
  check(m.payload.toString() === 'gone', `expected the will, got ${show(m)}`);
}

const SCENARIOS = [
  ['mqttjs_connect_v5', () => connectVersion(5), 10000],
  ['mqttjs_connect_v311', () => connectVersion(4), 10000],
  ['mqttjs_connect_v31', () => connectVersion(3), 10000],
  ['mqttjs_qos1_round_trip', qos1RoundTrip, 10000],
  ['mqttjs_retained', retainedBasic, 10000],
  ['mqttjs_will', willBasic, 10000],
  // name, function, timeout (ms)
  ['mqttjs_connack_properties', connackProperties, 15000],
  ['mqttjs_user_properties', userProperties, 15000],
  ['mqttjs_topic_alias_client', topicAliasClient, 15000],
  ['mqttjs_request_response', requestResponse, 15000],
  ['mqttjs_message_expiry', messageExpiry, 20000],
  ['mqttjs_payload_format_content_type', payloadFormatContentType, 15000],
  ['mqttjs_subscription_identifiers', subscriptionIdentifiers, 15000],
  ['mqttjs_no_local', noLocal, 15000],
  ['mqttjs_retain_as_published', retainAsPublished, 15000],
  ['mqttjs_retain_handling', retainHandling, 15000],
  ['mqttjs_puback_no_subscribers', pubackNoSubscribers, 15000],
  ['mqttjs_v311_interop', v311V5Interop, 15000],
  ['mqttjs_session_expiry_zero', sessionExpiryZero, 15000],
  ['mqttjs_shared_subscription_advertised', sharedSubscriptionAdvertised, 15000],
  ['mqttjs_shared_subscription', sharedSubscription, 20000],
  ['mqttjs_session_expiry', sessionExpiry, 20000],
  ['mqttjs_will_delay', willDelay, 20000],
  ['mqttjs_server_topic_alias', serverTopicAlias, 15000],
];
for (const name of Object.keys(PENDING)) {
  if (!SCENARIOS.some(([n]) => n === name)) throw new Error(`PENDING names an unknown scenario: ${name}`);
}

async function closeAll() {
  const conns = RESOURCES;
  RESOURCES = [];
  await Promise.all(conns.map((c) => new Promise((resolve) => {
    if (c.closed) return resolve();
    const timer = setTimeout(resolve, 2000);
    c.client.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      c.client.end(true);
    } catch {
      clearTimeout(timer);
      resolve();
    }
  })));
}

async function runOne(fn, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, err: `timed out after ${ms / 1000}s` }), ms);
  });
  const run = fn().then(
    () => ({ ok: true }),
    (e) => {
      if (e instanceof ScenarioSkip) return { ok: null, err: e.message };
      if (e instanceof ScenarioError) return { ok: false, err: e.message };
      const where = (e?.stack ?? '').split('\n').slice(1, 3).map((s) => s.trim()).join(' | ');
      return { ok: false, err: `${e?.name ?? 'Error'}: ${e?.message ?? e} [${where}]` };
    },
  );
  const result = await Promise.race([run, timeout]);
  clearTimeout(timer);
  await closeAll();
  return result;
}

async function main() {
  if (argv.includes('--list')) {
    for (const [name] of SCENARIOS) console.log(name + (PENDING[name] ? `  (PENDING: ${PENDING[name]})` : ''));
    return 0;
  }
  if (!PORT && !URL_) {
    console.error('usage: PORT=1883 node scenarios.mjs  (or --port 1883)');
    return 2;
  }
  // a scenario abandoned after its timeout must not crash the run
  process.on('unhandledRejection', () => {});
  let passed = 0;
  let failed = 0;
  let pending = 0;
  const start = Date.now();
  for (const [name, fn, ms] of SCENARIOS) {
    if (ONLY.length && !ONLY.includes(name)) continue;
    if (PENDING[name] && !RUN_ALL) {
      pending++;
      console.log(`PENDING ${name}${SUFFIX}: ${PENDING[name]} (not run; ALL=1 runs it)`);
      continue;
    }
    const r = await runOne(fn, ms);
    if (r.ok === null) {
      console.log(`SKIP ${name}${SUFFIX}: ${r.err}`);
    } else if (r.ok) {
      passed++;
      console.log(`PASS ${name}${SUFFIX}`);
    } else {
      failed++;
      console.log(`FAIL ${name}${SUFFIX}: ${r.err}`);
    }
  }
  console.log(`# mqttjs: ${passed} passed, ${failed} failed, ${pending} pending in ${((Date.now() - start) / 1000).toFixed(1)}s`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.log(`FAIL mqttjs_runner: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
