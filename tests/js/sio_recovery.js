// Official socket.io-client driving connection state recovery against a volleyio server
// built by tests/test_socketio_recovery.py.
//
// Usage: node sio_recovery.js '<json config>'
//   config: {url, how: "drop" | "ping", bogus_pid?: bool, room}
// Steps: connect (websocket), join `room`, receive one room broadcast and one direct emit
// (so the client holds an offset), then lose the connection abnormally: "drop" destroys
// the TCP socket, "ping" stops reading it (both ends see a ping timeout). The server
// emits news/direct 1..5 from its disconnect handler (missed); the client reconnects by
// itself; the server's connect handler emits "after". Prints one JSON line: ids, the
// `recovered` flag, the events received after the reconnect in order, the rooms the
// server reports. Hard cap 30 s.
'use strict';
const { io } = require('socket.io-client');

const config = JSON.parse(process.argv[2] || '{}');
const cap = setTimeout(() => fail(new Error('timeout (30 s cap)')), 30000);
let socket;

function fail(err) {
  console.log(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }));
  try { socket && socket.io.engine && socket.io.engine.close(); } catch (e) { /* gone */ }
  process.exit(1);
}

function waitFor(predicate, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (predicate()) { clearInterval(timer); resolve(); }
      else if (Date.now() - started > ms) { clearInterval(timer); reject(new Error(`timed out waiting for ${what}`)); }
    }, 10);
  });
}

async function main() {
  socket = io(config.url, {
    transports: ['websocket'],
    reconnectionDelay: 800,
    reconnectionDelayMax: 800,
    randomizationFactor: 0,
  });
  const received = [];
  let phase = 'before';
  socket.on('news', (...args) => received.push({ phase, event: 'news', args }));
  socket.on('direct', (...args) => received.push({ phase, event: 'direct', args }));
  socket.on('after', (...args) => received.push({ phase, event: 'after', args }));
  const connects = [];
  socket.on('connect', () => {
    connects.push({ id: socket.id, recovered: socket.recovered });
    if (connects.length === 2) phase = 'after-reconnect';
  });
  await waitFor(() => connects.length === 1, 'connect');
  await socket.timeout(5000).emitWithAck('join', config.room);
  await socket.timeout(5000).emitWithAck('prime', config.room);
  await waitFor(() => received.length >= 2, 'the priming packets');
  const disconnected = new Promise((resolve) => socket.once('disconnect', (reason) => resolve(reason)));
  phase = 'lost';
  if (config.bogus_pid) socket._pid = 'no-such-session';
  const raw = socket.io.engine.transport.ws._socket;
  if (config.how === 'drop') raw.destroy();
  else raw.pause();
  const reason = await disconnected;
  await waitFor(() => connects.length === 2, 'the reconnect');
  await waitFor(() => received.some((r) => r.event === 'after'), 'the "after" event');
  const state = await socket.timeout(5000).emitWithAck('state');
  clearTimeout(cap);
  console.log(JSON.stringify({
    ok: true, reason, connects, state,
    before: received.filter((r) => r.phase === 'before'),
    replayed: received.filter((r) => r.phase !== 'before'),
  }));
  socket.disconnect();
  process.exit(0);
}

main().catch(fail);
