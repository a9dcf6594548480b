// Reference for the Admin UI protocol: the official Node `socket.io` 4.8 instrumented by
// `@socket.io/admin-ui` 0.5 itself, with the same scene as tests/test_socketio_admin.py's
// volleyio server ("/": socket.data.name = auth.name, joins "everyone", "ping"(n) emits
// "pong"(n) and acks n; "/chat": joins "lobby"; admin user "admin" / "s3cret"). The
// protocol driver sio_admin_client.js is run against it too, so what it checks is what
// the real package does.
//
// Usage: node admin_ref_server.js -> prints {"port": N, "pid": P} once listening.
// Exits when stdin closes or after 120 s.
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { instrument } = require('@socket.io/admin-ui');
const bcrypt = require('bcryptjs');

const httpServer = http.createServer();
const io = new Server(httpServer, { cors: { origin: true, credentials: true } });
instrument(io, {
  auth: { type: 'basic', username: 'admin', password: bcrypt.hashSync('s3cret', 4) },
  serverId: 'node-reference',
  mode: 'development',
});
io.on('connection', (socket) => {
  socket.data.name = (socket.handshake.auth && socket.handshake.auth.name) || 'anonymous';
  socket.join('everyone');
  socket.on('ping', (n, ack) => { socket.emit('pong', n); if (typeof ack === 'function') ack(n); });
});
io.of('/chat').on('connection', (socket) => socket.join('lobby'));

function stop() { io.close(); process.exit(0); }
httpServer.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: httpServer.address().port, pid: process.pid }));
});
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 120000);
