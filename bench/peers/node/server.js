// Node `ws` room relay for `callroom-bench compare`: the same bare relay as
// bench/peers/picows_relay.py (no auth, no validation), as a non-Python reference.
//
// Identity from the query (/ws/{kind}/{roomId}?clientId=...&name=...); a room_state-shaped
// frame on connect; add_chat encoded once and relayed to the room (sender included) with
// clientId/displayName/chatId/timestamp stamped; candidate relayed to targetClientId only;
// ping answered with pong. GET /ws/health answers 200.
//
//   node bench/peers/node/server.js --port 8083
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const host = option('host', '127.0.0.1');
const port = Number(option('port', '8083'));
const rooms = new Map(); // room -> Map(clientId -> member)
const PONG = Buffer.from('{"event":"pong","payload":{}}');

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/ws/health')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
  } else {
    res.writeHead(404);
    res.end();
  }
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  const parts = url.pathname.split('/');
  const clientId = url.searchParams.get('clientId');
  if (parts.length !== 4 || parts[1] !== 'ws' || !parts[3] || !clientId) {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    return;
  }
  const member = {
    room: `${parts[2]}/${parts[3]}`,
    clientId,
    name: url.searchParams.get('name') || clientId,
    sequence: 0,
    ws: null,
  };
  wss.handleUpgrade(req, socket, head, (ws) => join(member, ws));
});

function join(member, ws) {
  member.ws = ws;
  let members = rooms.get(member.room);
  if (!members) {
    members = new Map();
    rooms.set(member.room, members);
  }
  members.set(member.clientId, member);
  const infos = [...members.values()].map((m) => ({ clientId: m.clientId, displayName: m.name }));
  ws.send(JSON.stringify({
    event: 'room_state',
    payload: {
      clientId: member.clientId,
      displayName: member.name,
      role: 'participant',
      roomId: member.room,
      hosts: [],
      participants: infos,
      handsRaised: [],
      waitingUsers: [],
      sharingScreen: [],
      locked: false,
      media: {},
    },
  }));

  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const payload = (message && message.payload) || {};
    if (message.event === 'add_chat') {
      member.sequence += 1;
      const out = Buffer.from(JSON.stringify({
        event: 'add_chat',
        payload: {
          clientId: member.clientId,
          displayName: member.name,
          chatId: `${member.clientId}-${member.sequence}`,
          timestamp: Date.now(),
          chatContent: payload.chatContent,
        },
      }));
      for (const other of members.values()) other.ws.send(out, { binary: false });
    } else if (message.event === 'candidate') {
      const target = members.get(payload.targetClientId);
      if (target) {
        const relayed = { ...payload, clientId: member.clientId, displayName: member.name };
        target.ws.send(JSON.stringify({ event: 'candidate', payload: relayed }));
      }
    } else if (message.event === 'ping') {
      ws.send(PONG, { binary: false });
    }
  });

  ws.on('close', () => {
    if (members.get(member.clientId) === member) {
      members.delete(member.clientId);
      if (members.size === 0) rooms.delete(member.room);
    }
  });
}

server.listen({ host, port, backlog: 2048 }, () => {
  console.log(`node ws relay on ws://${host}:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
