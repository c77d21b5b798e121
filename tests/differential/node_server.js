// Node's http server (llhttp, strict: insecureHTTPParser off) echoing what it parsed of each
// request: {"method", "target", "length"}. A request llhttp refuses gets 400 and a close.
// Prints its port. Used by tests/differential/run.py.
'use strict';
const http = require('http');

const server = http.createServer({ keepAliveTimeout: 5000, requireHostHeader: true }, (req, res) => {
  let length = 0;
  req.on('data', (chunk) => { length += chunk.length; });
  req.on('end', () => {
    const body = JSON.stringify({ method: req.method, target: req.url, length });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  socket.destroy();
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
