// Official socket.io-client 4.8 (in Node) driving a Socket.IO server that implements the
// scenario contract documented in sio_ref_server.js (Node reference) and built by
// tests/test_socketio_interop.py (volleyio).
//
// Usage: node sio_client.js '<json config>'
//   config: {url, transports: ["polling"] | ["websocket"] | ["polling","websocket"],
//            scenario: "connect" | "acks" | "binary" | "rooms" | "disconnect" | "order", many?: 500}
// Prints JSON lines; the last one is {"ok": true, "scenario": ..., ...results} or
// {"error": "..."}; exit status 0 only on success. Hard cap 40 s.
'use strict';
const assert = require('assert');
const { io } = require('socket.io-client');

const config = JSON.parse(process.argv[2] || '{}');
const TRANSPORTS = config.transports || ['polling', 'websocket'];
const UPGRADE = TRANSPORTS.length > 1;
const MANY = config.many || 500;
// Room names unique per run, so runs sharing one server cannot see each other's members.
const TAG = config.tag || Math.random().toString(36).slice(2, 10);
const STEP_TIMEOUT = 15000;
const cap = setTimeout(() => fail(new Error('timeout (40 s cap)')), 40000);
const sockets = [];

function fail(err) {
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }));
  for (const s of sockets) { try { s.io.engine && s.io.engine.close(); } catch (e) { /* already gone */ } }
  process.exit(1);
}

// Buffers become {"$bin": hex} (or length/sum when long) so results compare and print as JSON.
function canon(value) {
  if (Buffer.isBuffer(value) || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    const b = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer || value, value.byteOffset || 0, value.byteLength);
    let sum = 0; for (const x of b) sum = (sum + x) % 65536;
    return b.length <= 32 ? { $bin: b.toString('hex') } : { $bin_len: b.length, $bin_sum: sum };
  }
  if (Array.isArray(value)) return value.map(canon);
  if (value && typeof value === 'object') {
    const out = {};
    for (const k of Object.keys(value)) out[k] = canon(value[k]);
    return out;
  }
  return value;
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), STEP_TIMEOUT);
  })]).finally(() => clearTimeout(timer));
}

function once(emitter, event, what) {
  return withTimeout(new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), what || event);
}

// Emit with an ack and resolve with *all* ack arguments (emitWithAck keeps only the first).
function call(socket, event, ...args) {
  return withTimeout(new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))),
    `ack of ${event}`);
}

function open(nsp, auth, extra) {
  const s = io(config.url + (nsp === '/' ? '' : nsp), {
    transports: TRANSPORTS, upgrade: UPGRADE, forceNew: true, reconnection: false, auth, ...extra,
  });
  sockets.push(s);
  return s;
}

async function connected(socket) {
  const result = await withTimeout(new Promise((resolve) => {
    socket.once('connect', () => resolve(null));
    socket.once('connect_error', (err) => resolve(err));
  }), `connect of ${socket.nsp}`);
  if (result) throw new Error(`connect_error on ${socket.nsp}: ${result.message} ${JSON.stringify(result.data)}`);
  return socket;
}

// In upgrade mode the scenario runs once the transport is WebSocket, so each mode tests what it says.
async function settled(socket) {
  const engine = socket.io.engine;
  if (UPGRADE && engine.transport.name !== 'websocket') await once(engine, 'upgrade', 'the websocket upgrade');
  return engine.transport.name;
}

async function refusal(socket) {
  const [err] = await once(socket, 'connect_error', `connect_error on ${socket.nsp}`);
  return { message: err.message, data: err.data === undefined ? null : err.data };
}

async function waitFor(what, probe, expected) {
  // Eventual consistency across connections (another connection's disconnect): bounded polling.
  let last;
  for (let i = 0; i < 300; i++) {
    last = await probe();
    if (JSON.stringify(last) === JSON.stringify(expected)) return last;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: expected ${JSON.stringify(expected)}, last ${JSON.stringify(last)}`);
}

function closedReason(socket) {
  return once(socket, 'disconnect', `disconnect of ${socket.nsp}`).then(([reason]) => reason);
}

// One round of ordered traffic both ways: plain events up, a burst of events down, acks.
async function orderRound(s, from, n, ticks) {
  for (let i = from; i < from + n; i++) s.emit('seq', i);
  const echoes = Promise.all(Array.from({ length: Math.min(50, n) }, (_, i) => call(s, 'echo', from + i)));
  const [count] = await call(s, 'ticks', n);
  assert.strictEqual(count, n);
  (await echoes).forEach((r, i) => assert.deepStrictEqual(r, [from + i]));
  return ticks.length;
}

const scenarios = {
  async order() {
    // Round A starts right after connect: in upgrade mode it overlaps the polling ->
    // WebSocket switch, which must neither lose nor reorder packets in either direction.
    // The server also starts a burst of events the moment the namespace connects, while
    // the upgrade probe is usually still in flight.
    const n = Math.min(MANY, 300);
    const s = open('/', { token: 'good', burst: n });
    const bursts = [];
    const burstTransports = new Set();
    // Every third burst event carries an attachment: a header and its attachment may
    // travel on different transports when the switch lands between them.
    s.on('burst', (i, blob) => {
      const ok = i % 3 === 0 ? canon(blob).$bin === (i % 256).toString(16).padStart(2, '0') : blob === undefined;
      bursts.push(ok ? i : { bad: i, blob: canon(blob) });
      burstTransports.add(s.io.engine.transport.name);
    });
    await connected(s);
    const start = s.io.engine.transport.name;
    const ticks = [];
    s.on('tick', (i) => ticks.push(i));
    await orderRound(s, 0, n, ticks);
    const afterA = s.io.engine.transport.name;
    const transport = await settled(s);
    await orderRound(s, n, n, ticks);
    const [log] = await call(s, 'seq-log');
    assert.deepStrictEqual(log, Array.from({ length: 2 * n }, (_, i) => i), 'server saw events in order');
    const expectedTicks = [...Array(n).keys(), ...Array(n).keys()];
    assert.deepStrictEqual(ticks, expectedTicks, 'client saw events in order');
    assert.deepStrictEqual(bursts, [...Array(n).keys()], 'the connect-time burst arrived in order');
    s.disconnect();
    return { transport, final: s.io.engine.transport.name, start, afterA, n, burstTransports: [...burstTransports] };
  },

  async connect() {
    const main = await connected(open('/', { token: 'good', user: 'alice' }));
    const transport = await settled(main);
    const [me] = await call(main, 'whoami');
    assert.deepStrictEqual(me.auth, { token: 'good', user: 'alice' });
    assert.strictEqual(me.nsp, '/');
    assert.strictEqual(me.sid, main.id);
    assert.strictEqual(me.eio, main.io.engine.id);
    assert.strictEqual(me.transport, transport);
    // A second namespace multiplexed on the same Engine.IO connection (same Manager).
    const admin = await connected(main.io.socket('/admin', { auth: { token: 'good', role: 'admin' } }));
    const [adminMe] = await call(admin, 'whoami');
    assert.strictEqual(adminMe.nsp, '/admin');
    assert.strictEqual(adminMe.eio, me.eio, 'both namespaces share one Engine.IO session');
    assert.notStrictEqual(adminMe.sid, me.sid);
    assert.deepStrictEqual(adminMe.auth, { token: 'good', role: 'admin' });
    // Refusals and an unknown namespace on the same connection leave the others working.
    const unknown = await refusal(main.io.socket('/nope'));
    const refusedAdmin = await refusal(open('/admin', { token: 'bad' }));
    const refused = await refusal(open('/', { token: 'bad' }));
    const [echo] = await call(main, 'echo', 'still here');
    assert.strictEqual(echo, 'still here');
    const [echoAdmin] = await call(admin, 'echo', 'admin too');
    assert.strictEqual(echoAdmin, 'admin too');
    return { transport, me, adminMe, unknown, refused, refusedAdmin };
  },

  async acks() {
    const s = await connected(open('/', { token: 'good' }));
    const transport = await settled(s);
    const questions = [];
    s.on('question', (i, payload, ack) => { questions.push(i); ack({ i, payload, from: 'node' }); });
    const echoed = await call(s, 'echo', 'héllo ✓', 42, 1.5, true, null, { a: [1, 2, { b: 'c' }] }, ['x']);
    assert.deepStrictEqual(echoed, ['héllo ✓', 42, 1.5, true, null, { a: [1, 2, { b: 'c' }] }, ['x']]);
    const empty = await call(s, 'echo');
    assert.deepStrictEqual(empty, []);
    // Server -> client acks: the server calls "question" three times and acks with the answers.
    const [answers] = await call(s, 'ask', 3, { q: 'why' });
    assert.deepStrictEqual(answers, [0, 1, 2].map((i) => ({ i, payload: { q: 'why' }, from: 'node' })));
    // Many acks in flight, both directions.
    const replies = await Promise.all(Array.from({ length: MANY }, (_, i) => call(s, 'echo', i, `m${i}`)));
    replies.forEach((r, i) => assert.deepStrictEqual(r, [i, `m${i}`]));
    const [manyAnswers] = await call(s, 'ask', MANY, 'bulk');
    assert.strictEqual(manyAnswers.length, MANY);
    manyAnswers.forEach((a, i) => assert.deepStrictEqual(a, { i, payload: 'bulk', from: 'node' }));
    const final = s.io.engine.transport.name;
    s.disconnect();
    return { transport, final, echoed, empty, answers, many: MANY, questions: questions.length };
  },

  async binary() {
    const s = await connected(open('/', { token: 'good' }));
    const transport = await settled(s);
    const small = Buffer.from([0, 1, 2, 255]);
    const mid = Buffer.alloc(1000, 7);
    const big = Buffer.alloc(100000); for (let i = 0; i < big.length; i++) big[i] = i % 251;
    const one = Buffer.from([42]);
    const args = [small, { nested: [mid, 'txt', { deeper: one }] }, 'plain', big];
    // Client -> server BINARY_EVENT with 4 attachments, answered by a BINARY_ACK with 4.
    const echoed = await call(s, 'echo', ...args);
    assert.deepStrictEqual(canon(echoed), canon(args));
    assert.ok(Buffer.isBuffer(echoed[0]) || echoed[0] instanceof ArrayBuffer);
    // Server -> client BINARY_EVENT.
    const eventP = once(s, 'echoed', 'the echoed event');
    const [accepted] = await call(s, 'echo-event', small, { list: [mid, one] });
    const event = await eventP;
    assert.strictEqual(accepted, true);
    assert.deepStrictEqual(canon(event), canon([small, { list: [mid, one] }]));
    // Server -> client call with binary arguments, answered by the client's BINARY_ACK.
    s.on('question', (i, payload, ack) => ack({ i, payload, from: 'node' }));
    const [answers] = await call(s, 'ask', 2, { blob: small, more: [one, mid] });
    assert.deepStrictEqual(canon(answers), canon([0, 1].map((i) => ({ i, payload: { blob: small, more: [one, mid] }, from: 'node' }))));
    // Many binary packets in flight: attachments of consecutive packets share poll
    // payloads and WebSocket batches, and must still be reassembled per packet.
    const BIN_MANY = Math.min(MANY, 200);
    const binArgs = (i) => [Buffer.from([i % 256, 1]), { x: Buffer.alloc(300 + i, i % 256) }, `n${i}`, Buffer.from([i >> 8, 2])];
    const binReplies = await Promise.all(Array.from({ length: BIN_MANY }, (_, i) => call(s, 'echo', ...binArgs(i))));
    binReplies.forEach((r, i) => assert.deepStrictEqual(canon(r), canon(binArgs(i)), `binary echo ${i}`));
    const final = s.io.engine.transport.name;
    s.disconnect();
    return { transport, final, echoed: canon(echoed), event: canon(event), answers: canon(answers), binMany: BIN_MANY };
  },

  async rooms() {
    const [c1, c2, c3] = await Promise.all([1, 2, 3].map((i) => connected(open('/', { token: 'good', user: `u${i}` }))));
    const transport = await settled(c1);
    await Promise.all([settled(c2), settled(c3)]);
    const got = { c1: [], c2: [], c3: [] };
    const bcast = (name) => (...args) => got[name].push(canon(args));
    c1.on('bcast', bcast('c1')); c2.on('bcast', bcast('c2')); c3.on('bcast', bcast('c3'));
    const red = `red-${TAG}`;
    const blue = `blue-${TAG}`;
    const joins = [(await call(c1, 'join', red))[0], (await call(c2, 'join', red))[0], (await call(c3, 'join', blue))[0]];
    assert.deepStrictEqual(joins, [1, 2, 1]);
    const c2Red = once(c2, 'bcast', 'broadcast to c2');
    const c1Red = once(c1, 'bcast', 'broadcast to c1');
    await call(c1, 'broadcast', red, 'to red', Buffer.from([9, 9]));
    await Promise.all([c1Red, c2Red]);
    // c3 is not in red: its own blue broadcast must be the only thing it ever received
    // (a red delivery to c3 would have been queued on its connection before this one).
    const c3Blue = once(c3, 'bcast', 'broadcast to c3');
    await call(c3, 'broadcast', blue, 'to blue');
    await c3Blue;
    assert.deepStrictEqual(got.c3, [['to blue']]);
    assert.deepStrictEqual(got.c1, [['to red', { $bin: '0909' }]]);
    assert.deepStrictEqual(got.c2, got.c1);
    // Broadcast with acks: the server collects one answer per member of red.
    [c1, c2, c3].forEach((c, i) => c.on('poll', (ack) => ack(`c${i + 1}`)));
    const [polled] = await call(c1, 'poll-room', red);
    assert.deepStrictEqual(polled, ['c1', 'c2']);
    const c2Sid = c2.id;
    const c3Sid = c3.id;
    // Member counts follow disconnects: a namespace disconnect (c2), then a dropped transport (c3).
    c2.disconnect();
    const redAfter = await waitFor('red size after c2 left', async () => (await call(c1, 'room-size', red))[0], 1);
    c3.io.engine.close();
    const blueAfter = await waitFor('blue size after c3 dropped', async () => (await call(c1, 'room-size', blue))[0], 0);
    const reasons = await waitFor('server-side reasons', async () => {
      const [all] = await call(c1, 'reasons');
      return [all[c2Sid] || null, all[c3Sid] || null];
    }, ['client namespace disconnect', 'transport close']);
    const [ownRoom] = await call(c1, 'room-size', c1.id);
    c1.disconnect();
    return { transport, joins, got, polled, redAfter, blueAfter, reasons, ownRoom, c2: c2Sid, c3: c3Sid };
  },

  async disconnect() {
    const main = await connected(open('/', { token: 'good' }));
    const transport = await settled(main);
    const admin = await connected(main.io.socket('/admin', { auth: { token: 'good' } }));
    const kicked = admin.id;
    const kickReason = closedReason(admin);
    const kickedEvent = once(admin, 'kicked', 'the kicked event');
    admin.emit('kick-me');
    const [bye] = await kickedEvent;
    const clientSawKick = await kickReason;
    assert.strictEqual(bye, 'bye');
    assert.strictEqual(clientSawKick, 'io server disconnect');
    assert.strictEqual(admin.connected, false);
    // The Engine.IO session survives; the main namespace still works and /admin can come back.
    const [still] = await call(main, 'echo', 'after kick');
    assert.strictEqual(still, 'after kick');
    admin.connect();
    await connected(admin);
    const rejoined = admin.id;
    const [adminMe] = await call(admin, 'whoami');
    assert.strictEqual(adminMe.eio, main.io.engine.id);
    assert.notStrictEqual(rejoined, kicked);
    const leaveReason = closedReason(admin);
    admin.disconnect();
    const clientSawLeave = await leaveReason;
    assert.strictEqual(clientSawLeave, 'io client disconnect');
    const reasons = await waitFor('server-side reasons', async () => {
      const [all] = await call(main, 'reasons');
      return [all[kicked] || null, all[rejoined] || null];
    }, ['server namespace disconnect', 'client namespace disconnect']);
    const mainSid = main.id;
    main.disconnect();
    return { transport, kicked, rejoined, mainSid, clientSawKick, clientSawLeave, reasons };
  },
};

(async () => {
  const scenario = scenarios[config.scenario];
  if (!scenario) throw new Error(`unknown scenario ${config.scenario}`);
  const result = await scenario();
  console.log(JSON.stringify({ ok: true, scenario: config.scenario, transports: TRANSPORTS, ...result }));
  clearTimeout(cap);
  for (const s of sockets) { try { s.io.engine && s.io.engine.close(); } catch (e) { /* gone */ } }
  process.exit(0);
})().catch(fail);
