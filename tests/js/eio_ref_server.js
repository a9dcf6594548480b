// The official Node engine.io server running the same scripted handler as the Python
// test server in tests/test_engineio_interop.py. It exists to validate the client scripts
// (eio_client.js, tests/peers/pye_client.py) against the reference implementation.
//
// Usage: node eio_ref_server.js '<json config>'   (pingInterval, pingTimeout in ms)
// Prints {"port": N} once listening, then one JSON line per finished session:
// {"event": "session", "received": [...described messages...], "reason": "...", "pongs": N}.
// Exits when stdin closes.
'use strict';
const crypto = require('crypto');
const http = require('http');
const { Server } = require('engine.io');

const config = JSON.parse(process.argv[2] || '{}');
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function bigText(n, seed) {
  const unit = `${seed}-volleyio-€-`;
  return unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
}
function bigBinary(n, seed) {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = (i * 7 + seed) % 251;
  return buf;
}
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

const engine = new Server({
  pingInterval: config.pingInterval || 300,
  pingTimeout: config.pingTimeout || 200,
  maxHttpBufferSize: 1e6,
});
const httpServer = http.createServer();
engine.attach(httpServer, { path: '/engine.io/' });

engine.on('connection', (socket) => {
  const received = [];
  let pongs = 0;
  let floodExpected = -1;
  let floodSeen = 0;
  const big = config.big || 524288;
  const startTransport = socket.transport.name;
  let upgraded = null;
  socket.on('heartbeat', () => { pongs += 1; });
  socket.on('upgrade', (t) => { upgraded = t.name; });
  // Node flushes its whole buffer into one poll response; python-engineio refuses more
  // than 16 packets per payload, so the flood is paced by "drain" in chunks of 10.
  async function sendPaced(messages) {
    for (let i = 0; i < messages.length; i += 10) {
      for (const m of messages.slice(i, i + 10)) socket.send(m);
      if (socket.writeBuffer.length) await new Promise((resolve) => socket.once('drain', resolve));
    }
  }
  let chain = Promise.resolve();
  socket.on('message', (data) => {
    received.push(describe(data));
    chain = chain.then(async () => {
      if (data === 'please:big') {
        socket.send(bigText(big, 's'));
        socket.send(bigBinary(big, 5));
      } else if (typeof data === 'string' && data.startsWith('please:flood:')) {
        floodExpected = Number(data.slice('please:flood:'.length));
        floodSeen = 0;
        await sendPaced(Array.from({ length: floodExpected }, (_, i) => floodItem('s', i)));
      } else if (data === 'please:close') {
        await sendPaced(Array.from({ length: config.goodbyes || 0 }, (_, i) => `bye:${i}`));
        socket.close();
      } else if (Buffer.from(data.slice(0, 2)).toString('latin1') === 'c:') {
        floodSeen += 1;
        if (floodSeen === floodExpected) socket.send('flood-ok');
      } else {
        socket.send(data);
      }
    });
  });
  socket.on('close', (reason) => {
    emit({ event: 'session', received, reason, pongs, transport: socket.transport ? socket.transport.name : null,
      start_transport: startTransport, upgraded });
  });
});

httpServer.listen(0, '127.0.0.1', () => emit({ port: httpServer.address().port }));
process.stdin.resume();
process.stdin.on('end', () => { engine.close(); httpServer.close(); process.exit(0); });
