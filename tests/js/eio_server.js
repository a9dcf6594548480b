// Node `engine.io` reference server for volleyio's Engine.IO client tests.
// Usage: node eio_server.js ['{"pingInterval":300,"pingTimeout":200,"transports":["polling"],"refuseWebSocket":true}']
// Listens on 127.0.0.1, port 0, and prints {"port": N} once listening.
// Every message is echoed back, except these text commands:
//   "close me"      the server closes the session
//   "send N"        the server sends N text messages "msg-0" ... "msg-(N-1)"
//   "send binary"   the server sends the bytes 00 01 02 03 ff
//   "send big N"    the server sends one text message of N "x" characters
//   "info"          JSON: {transport, pongs, upgraded, lastClose} (lastClose: the reason the
//                   previous session closed with, on the server side)
// breakWebSocket: "refuse" | "drop" | "hang": the handshake still offers "websocket", but
// every WebSocket request is answered 403, has its TCP connection dropped, or is never
// answered, so an upgrade attempt fails and the client must stay on polling.
// Exits when stdin closes or after 60 s.
'use strict';
const http = require('http');
const engine = require('engine.io');

const options = process.argv[2] ? JSON.parse(process.argv[2]) : {};
const serverOptions = {
  pingInterval: options.pingInterval || 25000,
  pingTimeout: options.pingTimeout || 20000,
  maxHttpBufferSize: options.maxHttpBufferSize || 1e7,
};
if (options.transports) serverOptions.transports = options.transports;

const httpServer = http.createServer();
const eio = new engine.Server(serverOptions);
eio.attach(httpServer);
if (options.breakWebSocket) {
  httpServer.removeAllListeners('upgrade');
  const held = [];
  httpServer.on('upgrade', (req, socket) => {
    if (options.breakWebSocket === 'refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    } else if (options.breakWebSocket === 'drop') {
      socket.destroy();
    } else {
      held.push(socket);
    }
  });
}
let lastClose = null;

eio.on('connection', (socket) => {
  let pongs = 0;
  let upgraded = false;
  socket.on('packet', (packet) => { if (packet.type === 'pong') pongs += 1; });
  socket.on('upgrade', () => { upgraded = true; });
  socket.on('close', (reason) => { lastClose = reason; });
  socket.on('message', (data) => {
    if (typeof data === 'string') {
      if (data === 'close me') { socket.close(); return; }
      if (data === 'send binary') { socket.send(Buffer.from([0, 1, 2, 3, 255])); return; }
      if (data === 'info') {
        socket.send(JSON.stringify({ transport: socket.transport.name, pongs, upgraded, lastClose }));
        return;
      }
      let match = /^send big (\d+)$/.exec(data);
      if (match) { socket.send('x'.repeat(Number(match[1]))); return; }
      match = /^send (\d+)$/.exec(data);
      if (match) {
        for (let i = 0; i < Number(match[1]); i += 1) socket.send('msg-' + i);
        return;
      }
    }
    socket.send(data);
  });
});

httpServer.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: httpServer.address().port }));
});
const stop = () => { eio.close(); httpServer.close(); process.exit(0); };
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 60000);
