// The official Node `socket.io` 4.8 server, as the peer of tests/test_socketio_trio_client.py
// (volleyio's trio Socket.IO client against the reference implementation).
//
// Usage: node sio_server.js '<json options>'
//   options: {"transports": ["polling","websocket"], "pingInterval": 25000, "pingTimeout": 20000,
//             "maxHttpBufferSize": 1e6}
// Prints {"port": N} once listening on 127.0.0.1, then one JSON line per server-side event
// ({"event":"connect"|"disconnect", ...}). Exits when stdin closes or after 120 s.
//
// Namespaces "/" and "/admin" (any other: "Invalid namespace"). On both:
//   middleware: auth.token === "bad" -> refused, message "not authorized", data {code: 4001, why: "bad token"}
//   on connect: emits "welcome"({sid, nsp, auth})
//   "whoami"()                 -> ack({sid, eio, nsp, auth, transport})
//   "echo"(...args)            -> ack(...args)                       (binary attachments preserved)
//   "echo-event"(...args)      -> emit "echoed"(...args) to the sender, then ack(true)
//   "ask"(n, payload)          -> n concurrent server->client calls "question"(i, payload); ack(answers by i)
//   "join"/"leave"(room)       -> ack(member count of room in this namespace); "room-size"(room) likewise
//   "broadcast"(room, ...args) -> emit "bcast"(...args) to every member of room; ack(true)
//   "record"(key, value)       -> appends value to the list `key` (survives reconnects; no ack)
//   "records"(key)             -> ack(list)
//   "kick-me"()                -> ack("bye"), then this namespace socket is disconnected by the server
//   "kill-transport"()         -> ack("ok"), then the whole Engine.IO connection is closed
//   "reasons"()                -> ack({socket id: server-side disconnect reason}) for every socket gone so far
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const options = JSON.parse(process.argv[2] || '{}');
const httpServer = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const io = new Server(httpServer, {
  serveClient: false,
  transports: options.transports || ['polling', 'websocket'],
  pingInterval: options.pingInterval || 25000,
  pingTimeout: options.pingTimeout || 20000,
  maxHttpBufferSize: options.maxHttpBufferSize || 1e6,
});
const reasons = {};
const records = {};
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
    log({ event: 'connect', nsp: nsp.name, sid: socket.id, eio: socket.conn.id, auth: socket.handshake.auth,
      transport: socket.conn.transport.name });
    socket.on('disconnect', (reason) => {
      reasons[socket.id] = reason;
      log({ event: 'disconnect', nsp: nsp.name, sid: socket.id, reason });
    });
    socket.emit('welcome', { sid: socket.id, nsp: nsp.name, auth: socket.handshake.auth });
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
    socket.on('record', (key, value) => { (records[key] = records[key] || []).push(value); });
    socket.on('records', (key, ack) => ack(records[key] || []));
    socket.on('kick-me', (ack) => { ack('bye'); socket.disconnect(); });
    socket.on('kill-transport', (ack) => { ack('ok'); setTimeout(() => socket.conn.close(), 20); });
    socket.on('reasons', (ack) => ack(reasons));
  });
}
setup(io.of('/'));
setup(io.of('/admin'));

httpServer.listen(0, '127.0.0.1', () => log({ port: httpServer.address().port }));
const stop = () => { io.close(); process.exit(0); };
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 120000);
