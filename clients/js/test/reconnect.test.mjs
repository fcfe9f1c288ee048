// Reconnect and re-subscribe: the client against real nodes that are killed,
// stopped (close code 1012) and started again by tests/test_js_client.py's
// control server. Node 0 and node 1 are independent nodes.
import assert from 'node:assert/strict';
import { after, afterEach, test } from 'node:test';

import { RtforgeClient } from '../rtforge.js';
import {
  collector, control, DEAD_URL, nextEvent, publishHttp, uniqueChannel, waitFor, WS_URLS,
} from './helpers.mjs';

const clients = [];
function client(urls, options = {}) {
  const c = new RtforgeClient(urls, { backoffInitial: 100, backoffMax: 1000, ...options });
  clients.push(c);
  return c;
}
after(() => clients.forEach((c) => c.close()));
afterEach(async () => {
  await control(0, 'start'); // whatever a test did, node 0 runs again afterwards
  await control(1, 'start');
});

test('after its node is killed the client moves to the next node and re-subscribes', async () => {
  const c = client([WS_URLS[0], WS_URLS[1]]);
  const first = await c.connect();
  assert.equal(first.url, WS_URLS[0]);
  const channel = uniqueChannel('chat');
  const frames = collector();
  await c.subscribe(channel, frames);
  await publishHttp(0, channel, { n: 1 });
  await waitFor(() => frames.frames.length === 1);

  const reopened = nextEvent(c, 'open');
  await control(0, 'kill');
  const info = await reopened;
  assert.equal(info.url, WS_URLS[1]);
  assert.equal(info.reconnected, true);
  assert.notEqual(info.connectionId, first.connectionId);
  // re-subscribed on the new node before 'open' was emitted
  assert.equal(await c.presence(channel), 1);
  assert.equal(await publishHttp(1, channel, { n: 2 }), 1);
  await waitFor(() => frames.frames.length === 2);
  assert.deepEqual(frames.frames.map((f) => f.payload), [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(c.channels(), [channel]);
});

test('with one URL the client retries with backoff until the node is back', async () => {
  const c = client([WS_URLS[0]]);
  await c.connect();
  const channel = uniqueChannel();
  const frames = collector();
  await c.subscribe(channel, frames);
  const retries = [];
  c.on('reconnecting', (r) => retries.push(r));

  await control(0, 'kill');
  await waitFor(() => retries.length >= 3, { message: 'three reconnect attempts' });
  const delays = retries.map((r) => r.delay);
  assert.ok(delays[2] > delays[0], `backoff does not grow: ${delays}`);
  assert.deepEqual(retries.slice(0, 3).map((r) => r.attempt), [1, 2, 3]);

  const reopened = nextEvent(c, 'open');
  await control(0, 'start');
  const info = await reopened;
  assert.equal(info.url, WS_URLS[0]);
  assert.equal(await publishHttp(0, channel, 'back'), 1);
  await waitFor(() => frames.frames.length === 1);
  assert.equal(c.attempt, 0); // reset once connected
});

test('close code 1012 (node restarting) reconnects at once, to the next node', async () => {
  // a backoff this long would fail the timing below if it were applied
  const c = client([WS_URLS[0], WS_URLS[1]], { backoffInitial: 20000, backoffMax: 20000 });
  await c.connect();
  const channel = uniqueChannel();
  const frames = collector();
  await c.subscribe(channel, frames);
  const closed = nextEvent(c, 'close');
  const reopened = nextEvent(c, 'open');
  const stopping = control(0, 'stop'); // SIGTERM: the node closes its sockets with 1012
  const close = await closed;
  assert.equal(close.code, 1012);
  const started = Date.now();
  const info = await reopened;
  assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  assert.equal(info.url, WS_URLS[1]);
  await stopping;
  assert.equal(await publishHttp(1, channel, 'moved'), 1);
  await waitFor(() => frames.frames.length === 1);
});

test('commands issued while reconnecting wait for the new connection', async () => {
  const c = client([WS_URLS[0], WS_URLS[1]], { requestTimeout: 8000 });
  await c.connect();
  const closed = nextEvent(c, 'close');
  await control(0, 'kill');
  await closed;
  assert.notEqual(c.state, 'open');
  const channel = uniqueChannel();
  const frames = collector();
  // issued while disconnected: sent once connected to node 1
  const [reply, count] = await Promise.all([c.subscribe(channel, frames), c.presence(channel)]);
  assert.equal(reply.metadata.ok, true);
  assert.ok(count === 0 || count === 1);
  assert.equal(c.url, WS_URLS[1]);
  assert.equal(await publishHttp(1, channel, 'late'), 1);
  await waitFor(() => frames.frames.length === 1);
});

test('a first URL where nothing listens is skipped', async () => {
  const c = client([DEAD_URL, WS_URLS[1]]);
  const info = await c.connect();
  assert.equal(info.url, WS_URLS[1]);
  assert.equal(c.connects, 1);
});

test('frames sent to the old connection do not leak into the new one', async () => {
  const c = client([WS_URLS[0], WS_URLS[1]]);
  await c.connect();
  const channel = uniqueChannel();
  const frames = collector();
  await c.subscribe(channel, frames);
  const reopened = nextEvent(c, 'open');
  await control(0, 'kill');
  await reopened;
  await control(0, 'start');
  // node 0 is back, with no subscriber of the channel: nothing arrives from it
  assert.equal(await publishHttp(0, channel, 'lost'), 0);
  assert.equal(await publishHttp(1, channel, 'kept'), 1);
  await waitFor(() => frames.frames.length === 1);
  assert.equal(frames.frames[0].payload, 'kept');
});
