// Official socket.io-client 4.8 (in Node) checking acknowledgements against the server
// built by tests/test_socketio_acks.py (acks_server):
//   "later"   the handler takes ack= and answers from another task after `ms`: ["done", n]
//   "decline" the handler returns NO_ACK: the client's timeout must fire
//   "silent"  the handler takes ack= and never answers: the client's timeout must fire
//   "fail"    the handler raises: on_error sees it, no ack (timeout fires)
//   "probe"   the server asks this client: call("ask-empty") / call("ask-null") with as_list,
//             and gather("ask-null", as_list) over the room "probe"; returns what it got
//   "null" / "empty" server answers with [null] / [] (return (None,) / return None)
//
// Usage: node sio_acks_client.js '{"url":..., "transports":[...]}'
// Prints JSON lines; the last one is {"ok": true, ...} or {"error": ...}. Hard cap 30 s.
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

// emit with a timeout: resolves {args} or {timeout: true}
function ask(event, ms, ...args) {
  return new Promise((resolve) => {
    socket.timeout(ms).emit(event, ...args, (err, ...answer) => {
      resolve(err ? { timeout: true } : { args: answer });
    });
  });
}

async function main() {
  socket = io(config.url, { transports: config.transports, reconnection: false });
  socket.on('ask-empty', (cb) => cb());
  socket.on('ask-null', (cb) => cb(null));
  socket.on('ask-two', (cb) => cb(1, 'two'));
  await new Promise((resolve, reject) => {
    socket.on('connect', resolve);
    socket.on('connect_error', reject);
  });
  const out = { ok: true, transport: socket.io.engine.transport.name };
  const started = Date.now();
  out.later = await ask('later', 5000, 7, 300);
  out.later_ms = Date.now() - started;
  out.twice = await ask('twice', 5000);
  out.decline = await ask('decline', 500);
  out.silent = await ask('silent', 500);
  out.fail = await ask('fail', 500);
  out.empty = await ask('empty', 5000);
  out.null = await ask('null', 5000);
  out.value = await ask('value', 5000, 'x');
  // with emitWithAck (4.6+), the promise API
  out.with_ack = await socket.timeout(5000).emitWithAck('later', 8, 10);
  out.probe = await ask('probe', 5000);
  // after all of that the connection still works and in order
  out.after = await ask('value', 5000, 'still here');
  out.transport_end = socket.io.engine.transport.name;
  clearTimeout(cap);
  socket.disconnect();
  console.log(JSON.stringify(out));
}

main().catch(fail);
