// Node socket.io with connectionStateRecovery: the reference for tests/test_socketio_recovery.py
// (the same contract as that file's build_server). Prints {"port": N} once listening; stops
// when stdin closes. Config (argv[2], JSON): {max_ms?}.
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const config = JSON.parse(process.argv[2] || '{}');
const MISSED = 5;
const httpServer = http.createServer();
const io = new Server(httpServer, {
  pingInterval: 400, pingTimeout: 400,
  connectionStateRecovery: { maxDisconnectionDuration: config.max_ms || 120000, skipMiddlewares: true },
});
let middlewares = 0;
io.use((socket, next) => { middlewares += 1; next(); });
io.on('connection', (socket) => {
  if (!socket.recovered) socket.data.visits = 0;
  socket.data.visits += 1;
  if (socket.handshake.auth && 'pid' in socket.handshake.auth) socket.emit('after', 'new');
  socket.on('join', (room, ack) => { socket.join(room); socket.data.room = room; ack(true); });
  socket.on('prime', (room, ack) => { io.to(room).emit('news', 0); socket.emit('direct', 0); ack(true); });
  socket.on('state', (ack) => ack({
    id: socket.id, rooms: [...socket.rooms].sort(), data: socket.data, recovered: socket.recovered, middlewares,
  }));
  socket.on('disconnect', (reason) => {
    if (reason === 'transport close' || reason === 'ping timeout' || reason === 'transport error') {
      for (let i = 1; i <= MISSED; i++) {
        io.to(socket.data.room).emit('news', i);
        io.to(socket.id).emit('direct', i);
      }
    }
  });
});
httpServer.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: httpServer.address().port })));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
