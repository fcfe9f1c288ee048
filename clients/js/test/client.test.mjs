// The JavaScript client against a real rtforge node: welcome, commands, channels, pings.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { RtforgeClient, RtforgeError } from '../rtforge.js';
import { collector, control, publishHttp, sleep, uniqueChannel, waitFor, WS_URLS } from './helpers.mjs';

const clients = [];
function client(urls = WS_URLS[0], options = {}) {
  const c = new RtforgeClient(urls, options);
  clients.push(c);
  return c;
}
after(() => clients.forEach((c) => c.close()));

test('connect reads the welcome frame', async () => {
  const c = client();
  const opened = [];
  c.on('open', (info) => opened.push(info));
  const info = await c.connect();
  assert.match(info.connectionId, /^[0-9a-f-]{36}$/);
  assert.equal(info.url, WS_URLS[0]);
  assert.equal(c.connectionId, info.connectionId);
  assert.equal(c.state, 'open');
  assert.deepEqual(opened, [{ connectionId: info.connectionId, url: WS_URLS[0], reconnected: false }]);
});

test('commands resolve with their replies, matched by id', async () => {
  const c = client();
  await c.connect();
  const channel = uniqueChannel();
  // several commands in flight at once: each promise gets its own reply
  const [sub, rtt, presence] = await Promise.all([
    c.subscribe(channel, () => {}),
    c.ping(),
    c.presence(uniqueChannel()),
  ]);
  assert.equal(sub.payload, `Subscribed to channel: ${channel}`);
  assert.equal(sub.metadata.ok, true);
  assert.ok(rtt >= 0);
  assert.equal(presence, 0);
  assert.equal(await c.presence(channel), 1);
  assert.ok((await c.listChannels()).includes(channel));
  const reply = await c.command('ping');
  assert.equal(reply.type, 'pong');
});

test('subscribe hands channel frames to that channel\'s handlers', async () => {
  const a = client();
  const b = client();
  await Promise.all([a.connect(), b.connect()]);
  const room = uniqueChannel('chat');
  const other = uniqueChannel('chat');
  const first = collector();
  const second = collector();
  const elsewhere = collector();
  await a.subscribe(room, first);
  await a.subscribe(room, second);
  await a.subscribe(other, elsewhere);
  const recipients = await b.publish(room, { text: 'hi' }, { event: 'chat.message' });
  assert.equal(recipients, 1);
  await waitFor(() => first.frames.length === 1 && second.frames.length === 1);
  const frame = first.frames[0];
  assert.equal(frame.type, 'event');
  assert.equal(frame.channel, room);
  assert.deepEqual(frame.payload, { event: 'chat.message', data: { text: 'hi' } });
  assert.equal(elsewhere.frames.length, 0);
  // json publish (no event name)
  assert.equal(await b.publish(room, [1, 2]), 1);
  await waitFor(() => first.frames.length === 2);
  assert.equal(first.frames[1].type, 'json');
  assert.deepEqual(first.frames[1].payload, [1, 2]);
});

test('unsubscribe removes one handler, then the subscription', async () => {
  const a = client();
  await a.connect();
  const channel = uniqueChannel();
  const one = collector();
  const two = collector();
  await a.subscribe(channel, one);
  await a.subscribe(channel, two);
  assert.equal(await a.unsubscribe(channel, one), null); // two still listens
  assert.equal(await a.presence(channel), 1);
  await publishHttp(0, channel, 'x');
  await waitFor(() => two.frames.length === 1);
  assert.equal(one.frames.length, 0);
  const reply = await a.unsubscribe(channel, two);
  assert.equal(reply.metadata.was_subscribed, true);
  assert.deepEqual(a.channels(), []);
  assert.equal(await a.presence(channel), 0);
});

test('a refused command rejects with the server\'s error code', async () => {
  const c = client();
  await c.connect();
  await assert.rejects(c.subscribe('', () => {}), (err) => {
    assert.ok(err instanceof RtforgeError);
    assert.equal(err.code, 'invalid_channel');
    assert.equal(err.reply.metadata.ok, false);
    return true;
  });
  assert.deepEqual(c.channels(), []); // a refused channel is not re-subscribed later
  await assert.rejects(c.command('no_such_command'), { code: 'unknown_command' });
  assert.equal(c.state, 'open'); // a failed command never closes the connection
});

test('a command without a reply times out', async () => {
  const c = client();
  await c.connect();
  await control(0, 'pause'); // the node hangs: no reply can come
  try {
    await assert.rejects(c.command('ping', {}, { timeout: 300 }), { code: 'timeout' });
  } finally {
    await control(0, 'resume');
  }
  assert.equal(await c.presence(uniqueChannel()), 0); // still usable
});

test('server pings are answered, so an idle client stays connected', async () => {
  // the node runs with --heartbeat-interval 0.2 --heartbeat-timeout 1
  const c = client();
  const pings = [];
  c.on('frame', (frame) => frame.type === 'ping' && pings.push(frame));
  let closed = null;
  c.on('close', (info) => { closed = info; });
  await c.connect();
  await sleep(2000);
  assert.ok(pings.length >= 3, `only ${pings.length} pings`);
  assert.equal(closed, null, `closed: ${JSON.stringify(closed)}`);
  assert.equal(c.state, 'open');
});

test('frames no handler takes are emitted as messages', async () => {
  const c = client();
  const messages = [];
  c.on('message', (frame) => messages.push(frame));
  await c.connect();
  c.send({ type: 'text', payload: 'hello server' });
  await waitFor(() => messages.some((f) => f.payload === 'Message received'));
});

test('backoff grows exponentially, is capped and jittered', () => {
  const low = new RtforgeClient('ws://x/ws', { random: () => 0, backoffInitial: 100, backoffMax: 1000 });
  const high = new RtforgeClient('ws://x/ws', { random: () => 0.999999, backoffInitial: 100, backoffMax: 1000 });
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((n) => low.backoff(n)), [50, 100, 200, 400, 500, 500]);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((n) => high.backoff(n)), [100, 200, 400, 800, 1000, 1000]);
  const rnd = new RtforgeClient('ws://x/ws', { backoffInitial: 100 });
  const delays = new Set(Array.from({ length: 20 }, () => rnd.backoff(3)));
  assert.ok(delays.size > 1, 'no jitter');
  for (const d of delays) assert.ok(d >= 400 && d <= 800, `delay ${d}`);
});

test('close stops the client for good', async () => {
  const c = client();
  await c.connect();
  const closed = [];
  c.on('close', (info) => closed.push(info));
  c.close();
  assert.equal(c.state, 'closed');
  assert.equal(closed.length, 1);
  assert.equal(closed[0].willReconnect, false);
  await assert.rejects(c.ping(), { code: 'closed' });
  await sleep(300);
  assert.equal(c.state, 'closed');
});
