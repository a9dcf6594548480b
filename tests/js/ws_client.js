// Node `ws` client driving a volleyio server. Usage: node ws_client.js <url> [deflate]
// Prints one JSON line with what it observed; exits by itself (hard cap 20 s).
'use strict';
const WebSocket = require('ws');

const url = process.argv[2];
const deflate = process.argv[3] === 'deflate';
const cap = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(2); }, 20000);

const ws = new WebSocket(url, ['chat.v1'], { perMessageDeflate: deflate });
const result = { protocol: null, extensions: null, echoes: [], pong: null, close: null };
const queue = [];
let waiter = null;
ws.on('message', (data, isBinary) => {
  const item = isBinary ? { binary: true, hex: data.length <= 64 ? data.toString('hex') : null, length: data.length,
    sum: data.reduce((a, b) => (a + b) % 65536, 0) } : { binary: false, text: data.toString('utf8') };
  if (waiter) { const w = waiter; waiter = null; w(item); } else queue.push(item);
});
const next = () => new Promise((resolve) => { if (queue.length) resolve(queue.shift()); else waiter = resolve; });

ws.on('error', (err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
ws.on('close', (code, reason) => {
  result.close = { code, reason: reason.toString('utf8') };
  clearTimeout(cap);
  console.log(JSON.stringify(result));
});
ws.on('open', async () => {
  result.protocol = ws.protocol;
  result.extensions = ws.extensions;
  ws.send('héllo ✓');
  result.echoes.push(await next());
  ws.send(Buffer.from([0, 1, 2, 255]));
  result.echoes.push(await next());
  const big = Buffer.alloc(1000000);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  ws.send(big);
  result.echoes.push(await next());
  // Fragmented text: a multi-byte character split across frames.
  const euro = Buffer.from('€', 'utf8');
  ws.send(Buffer.concat([Buffer.from('ab'), euro.subarray(0, 1)]), { binary: false, fin: false });
  ws.send(euro.subarray(1), { binary: false, fin: false });
  ws.send(Buffer.from('cd'), { binary: false, fin: true });
  result.echoes.push(await next());
  ws.send('x'.repeat(5000));  // compressible
  result.echoes.push(await next());
  ws.once('pong', (data) => {
    result.pong = data.toString('utf8');
    ws.close(4000, 'node bye');
  });
  ws.ping('node-ping');
});
