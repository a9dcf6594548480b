// Node `ws` echo server for volleyio's client. Usage: node ws_server.js [deflate]
// Prints {"port": N} once listening. A text message "close:<code>:<reason>" makes the
// server close with that code; "ping" makes it ping the client and report the pong.
// Exits when stdin closes or after 30 s.
'use strict';
const WebSocket = require('ws');

const deflate = process.argv[2] === 'deflate';
const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, perMessageDeflate: deflate,
  handleProtocols: (protocols) => (protocols.has('chat.v2') ? 'chat.v2' : false) });
wss.on('connection', (ws, req) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString('utf8');
      if (text.startsWith('close:')) {
        const [, code, reason] = text.split(':');
        ws.close(Number(code), reason);
        return;
      }
      if (text === 'ping') {
        ws.once('pong', (payload) => ws.send('pong:' + payload.toString('utf8')));
        ws.ping('from-node');
        return;
      }
      if (text === 'headers') {
        ws.send(JSON.stringify({ token: req.headers['x-token'] || null, ext: ws.extensions || '' }));
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
});
wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));
const stop = () => { wss.close(); process.exit(0); };
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 30000);
