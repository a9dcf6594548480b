// Reference Socket.IO server: the official Node `socket.io` 4.8 implementing the same
// scenario contract as the volleyio SocketIOServer built by tests/test_socketio_interop.py.
// It exists so the client drivers (sio_client.js, peers/pys_client.py, sio_page.html) can
// be checked against the real thing: a driver that passes here and fails against volleyio
// points at volleyio, not at the driver.
//
// Usage: node sio_ref_server.js   -> prints {"port": N} once listening, then one JSON line
// per server-side event ({"event":"connect"|"disconnect", ...}). Exits when stdin closes or
// after 300 s (SIO_REF_LIFETIME_MS). Also serves /sio_page.html and /socket.io.min.js for the browser driver.
//
// Contract (namespaces "/" and "/admin"; any other namespace is refused "Invalid namespace"):
//   connect: auth.token === "bad" -> refused: message "not authorized", data {code: 4001, why: "bad token"};
//            otherwise, with auth.burst = n, emit "burst"(i, <1-byte buffer [i % 256]> when i % 3 == 0)
//            for i in 0..n-1 right after connecting
//   "whoami"()            -> ack {sid, eio, nsp, auth, transport}
//   "echo"(...args)       -> ack(...args)                   (binary attachments preserved)
//   "echo-event"(...args) -> emit "echoed"(...args) to the sender, then ack(true)
//   "ask"(n, payload)     -> n concurrent server->client calls "question"(i, payload); ack(answers in order of i)
//   "join"(room) / "leave"(room) / "room-size"(room) -> ack(member count of room in this namespace)
//   "broadcast"(room, ...args) -> emit "bcast"(...args) to every member of room; ack(true)
//   "poll-room"(room)     -> broadcast "poll"() with acks to room (5 s timeout); ack(the answers, sorted)
//   "kick-me"()           -> emit "kicked"("bye"), then the server disconnects this namespace socket
//   "reasons"()           -> ack({socket id: server-side disconnect reason}) for every socket gone so far
//   "seq"(i)              -> (no ack) append i to this socket's log;  "seq-log"() -> ack(the log)
//   "ticks"(n)            -> emit "tick"(i) for i in 0..n-1 to the sender, then ack(n)
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { Server } = require('socket.io');

const STATIC = {
  '/sio_page.html': [path.join(__dirname, 'sio_page.html'), 'text/html; charset=utf-8'],
  '/socket.io.min.js': [path.join(__dirname, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js'), 'application/javascript'],
};

const httpServer = http.createServer((req, res) => {
  const entry = STATIC[new URL(req.url, 'http://x').pathname];
  if (!entry) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'content-type': entry[1] });
  res.end(fs.readFileSync(entry[0]));
});
const io = new Server(httpServer, { serveClient: false, pingInterval: 25000, pingTimeout: 20000 });
const reasons = {};
const log = (obj) => console.log(JSON.stringify(obj));

function setup(nsp) {
  nsp.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    if (auth.token === 'bad') {
      const err = new Error('not authorized');
      err.data = { code: 4001, why: 'bad token' };
      next(err);
      return;
    }
    next();
  });
  nsp.on('connection', (socket) => {
    log({ event: 'connect', nsp: nsp.name, sid: socket.id, eio: socket.conn.id, auth: socket.handshake.auth });
    for (let i = 0; i < ((socket.handshake.auth || {}).burst || 0); i++) {
      if (i % 3 === 0) socket.emit('burst', i, Buffer.from([i % 256])); else socket.emit('burst', i);
    }
    socket.on('disconnect', (reason) => {
      reasons[socket.id] = reason;
      log({ event: 'disconnect', nsp: nsp.name, sid: socket.id, reason });
    });
    socket.on('whoami', (ack) => ack({ sid: socket.id, eio: socket.conn.id, nsp: nsp.name,
      auth: socket.handshake.auth, transport: socket.conn.transport.name }));
    socket.on('echo', (...args) => { const ack = args.pop(); ack(...args); });
    socket.on('echo-event', (...args) => { const ack = args.pop(); socket.emit('echoed', ...args); ack(true); });
    socket.on('ask', async (n, payload, ack) => {
      const calls = [];
      for (let i = 0; i < n; i++) calls.push(socket.timeout(20000).emitWithAck('question', i, payload));
      try { ack(await Promise.all(calls)); } catch (err) { ack({ error: String(err) }); }
    });
    const size = (room) => (nsp.adapter.rooms.get(room) || new Set()).size;
    socket.on('join', (room, ack) => { socket.join(room); ack(size(room)); });
    socket.on('leave', (room, ack) => { socket.leave(room); ack(size(room)); });
    socket.on('room-size', (room, ack) => ack(size(room)));
    socket.on('broadcast', (room, ...args) => { const ack = args.pop(); nsp.to(room).emit('bcast', ...args); ack(true); });
    socket.on('poll-room', async (room, ack) => {
      try { ack((await nsp.to(room).timeout(5000).emitWithAck('poll')).sort()); } catch (err) { ack({ error: String(err) }); }
    });
    socket.on('kick-me', () => { socket.emit('kicked', 'bye'); socket.disconnect(); });
    socket.on('reasons', (ack) => ack(reasons));
    const seqLog = [];
    socket.on('seq', (i) => seqLog.push(i));
    socket.on('seq-log', (ack) => ack(seqLog));
    socket.on('ticks', (n, ack) => { for (let i = 0; i < n; i++) socket.emit('tick', i); ack(n); });
  });
}
setup(io.of('/'));
setup(io.of('/admin'));

httpServer.listen(0, '127.0.0.1', () => log({ port: httpServer.address().port }));
const stop = () => { io.close(); process.exit(0); };
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, Number(process.env.SIO_REF_LIFETIME_MS || 300000));
