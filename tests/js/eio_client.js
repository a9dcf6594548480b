// Official engine.io-client (Node) as a scripted Engine.IO peer for tests/test_engineio_interop.py.
//
// Usage: node eio_client.js '<json config>'
//   url         http://127.0.0.1:PORT
//   path        "/engine.io/"
//   transports  ["polling"] | ["websocket"] | ["polling", "websocket"] | null (library default)
//   upgrade     true/false (engine.io-client's `upgrade` option)
//   expect_upgrade  wait for the polling -> websocket upgrade before the later steps
//                   (its outcome, "upgrade" or "upgradeError", is recorded either way)
//   steps       subset of ["basic", "big", "flood", "limit", "heartbeat"], run in this order
//   big         size of the large text/binary payloads
//   flood       number of numbered messages each way
//   pings       heartbeat step: wait until this many server pings arrived
//   early_flood with "flood": start the flood right after open, before any upgrade
//   max_payload the server's maxPayload (step "limit" sends a packet of exactly that size)
//   close       "client" (we close) | "server" (ask the server to close, wait for it)
//               | "oversize" (send a packet one byte over max_payload, wait for the close)
//               | "wait" (print {"event": "ready"}, then wait for the server to end the session)
//   timeout_ms  hard cap for the whole run
//
// The data every step expects back is computed in Python; this script only records what
// it saw. Output: one JSON object per line ({"event": ...}); the last line has
// "event": "done" with every received message described (see describe()), the
// transport at the end, ping count and the close reason. Exit status 0 unless a step
// could not finish (timeout, early close, connection error).
'use strict';
const crypto = require('crypto');
const { Socket } = require('engine.io-client');

const config = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// Deterministic payloads shared with the Python side (same recipes in the test file).
function bigText(n, seed) {
  const unit = `${seed}-volleyio-€-`;
  return unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
}
function bigBinary(n, seed) {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * 7 + seed) % 251;
  return buf;
}
// Every 4th flood message is binary, so batched payloads mix both kinds.
function floodItem(prefix, i) {
  return i % 4 === 3 ? Buffer.from(`${prefix}:${i}`) : `${prefix}:${i}`;
}
function describe(data) {
  if (typeof data === 'string') {
    if (data.length <= 64) return { type: 'text', text: data };
    return { type: 'text', len: data.length, sha256: crypto.createHash('sha256').update(data, 'utf8').digest('hex') };
  }
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  if (buf.length <= 64) return { type: 'binary', hex: buf.toString('hex') };
  return { type: 'binary', len: buf.length, sha256: crypto.createHash('sha256').update(buf).digest('hex') };
}

const result = { event: 'done', received: [], transport: null, pings: 0, open: null, upgrade: null,
  close: null, error: null, steps_done: [] };
let finished = false;
function finish(status) {
  if (finished) return;
  finished = true;
  result.transport = socket.transport ? socket.transport.name : result.transport;
  emit(result);
  if (status !== 0) {
    process.stdout.write('', () => process.exit(status));
    return;
  }
  // A clean end exits once the event loop is idle, so that requests still in flight
  // (the polling POST carrying our close packet) reach the server first.
  process.exitCode = 0;
  setTimeout(() => process.exit(0), 5000).unref();
}
const cap = setTimeout(() => { result.error = 'timeout'; finish(2); }, config.timeout_ms || 20000);

// transports null: the library's defaults (polling, then websocket/webtransport upgrades).
const options = { path: config.path || '/engine.io/', upgrade: config.upgrade !== false };
if (config.transports) options.transports = config.transports;
const socket = new Socket(config.url, options);

const queue = [];
const waiters = [];
let closedWaiter = null;
let upgradeWaiter = null;
let pingWaiter = null;

socket.on('open', () => {
  result.open = { transport: socket.transport.name, sid: socket.id };
  emit({ event: 'open', transport: socket.transport.name });
  run().then(() => {}, (err) => { result.error = String(err && err.stack || err); finish(1); });
});
socket.on('handshake', (data) => { result.handshake = data; });
socket.on('message', (data) => {
  const item = describe(data);
  result.received.push(item);
  if (waiters.length) waiters.shift()(item); else queue.push(item);
});
socket.on('ping', () => {
  result.pings += 1;
  if (pingWaiter) pingWaiter();
});
socket.on('upgrade', (transport) => {
  result.upgrade = { ok: true, transport: transport.name, received_before: result.received.length };
  emit({ event: 'upgrade', transport: transport.name });
  if (upgradeWaiter) upgradeWaiter();
});
socket.on('upgradeError', (err) => {
  result.upgrade = { ok: false, error: String(err && err.message || err) };
  emit({ event: 'upgradeError', error: result.upgrade.error });
  if (upgradeWaiter) upgradeWaiter();
});
socket.on('error', (err) => {
  const message = String(err && err.message || err);
  emit({ event: 'error', error: message });
  // Once the closing step started, an error can be the expected way out ("oversize").
  if (result.steps_done.includes('close')) result.close_error = message;
  else result.error = message;
});
socket.on('close', (reason, description) => {
  result.transport = result.transport || (socket.transport ? socket.transport.name : null);
  const detail = description && (description.message || description.description || description);
  result.close = { reason, description: detail ? String(detail) : null };
  emit({ event: 'close', reason });
  if (closedWaiter) closedWaiter();
  else if (!result.steps_done.includes('close')) {
    result.error = result.error || `closed early: ${reason}`;
    clearTimeout(cap);
    finish(1);
  }
});

function next() {
  if (result.close) return Promise.reject(new Error(`closed while waiting: ${result.close.reason}`));
  return new Promise((resolve) => { if (queue.length) resolve(queue.shift()); else waiters.push(resolve); });
}
async function expectCount(n) { for (let i = 0; i < n; i++) await next(); }

async function run() {
  const steps = config.steps || ['basic'];
  const big = config.big || 524288;
  const flood = config.flood || 200;
  // "basic" goes out right away so that, with an upgrade, it races the probe.
  let basicPending = 0;
  if (steps.includes('basic')) {
    socket.send('héllo ✓');
    socket.send(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    basicPending = 2;
  }
  // "early_flood": the flood starts before the upgrade, so the switch happens mid-stream.
  const earlyFlood = Boolean(config.early_flood) && steps.includes('flood');
  if (earlyFlood) {
    socket.send(`please:flood:${flood}`);
    for (let i = 0; i < flood; i++) socket.send(floodItem('c', i));
  }
  if (config.expect_upgrade && !result.upgrade) {
    await new Promise((resolve) => { upgradeWaiter = resolve; });
  }
  if (basicPending) { await expectCount(basicPending); result.steps_done.push('basic'); }
  if (earlyFlood) {
    await expectCount(flood + 1);
    result.steps_done.push('flood');
  }
  if (steps.includes('big')) {
    socket.send('please:big');
    await expectCount(2);
    socket.send(bigText(big, 'c'));
    await expectCount(1);
    socket.send(bigBinary(big, 3));
    await expectCount(1);
    result.steps_done.push('big');
  }
  if (steps.includes('flood') && !earlyFlood) {
    socket.send(`please:flood:${flood}`);
    for (let i = 0; i < flood; i++) socket.send(floodItem('c', i));
    await expectCount(flood + 1);  // s:0..s:N-1 then "flood-ok"
    result.steps_done.push('flood');
  }
  if (steps.includes('limit')) {
    // The largest packet the server must accept: "4" + text = exactly maxPayload bytes.
    socket.send('L'.repeat(config.max_payload - 1));
    await expectCount(1);
    result.steps_done.push('limit');
  }
  if (steps.includes('heartbeat')) {
    const start = result.pings;
    while (result.pings - start < config.pings) {
      await new Promise((resolve) => { pingWaiter = resolve; });
      pingWaiter = null;
      if (result.close) throw new Error('closed during heartbeat');
    }
    result.pings_idle = result.pings - start;
    socket.send('after-idle');
    await expectCount(1);
    result.steps_done.push('heartbeat');
  }
  result.transport = socket.transport.name;
  const closed = new Promise((resolve) => { closedWaiter = resolve; });
  result.steps_done.push('close');
  if (config.close === 'server') socket.send('please:close');
  else if (config.close === 'oversize') socket.send('O'.repeat(config.max_payload));  // one byte too many
  else if (config.close === 'wait') emit({ event: 'ready' });  // the test freezes us (SIGSTOP)
  else socket.close();
  await closed;
  clearTimeout(cap);
  finish(0);
}
