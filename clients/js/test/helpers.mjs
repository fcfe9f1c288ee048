// Shared helpers for the JavaScript client's tests (node --test).
//
// The tests run against real rtforge nodes that tests/test_js_client.py starts;
// it passes their addresses and a small control server (kill/stop/start a node)
// through the environment:
//   RTFORGE_TEST_WS_URLS    space-separated ws://H:P/ws of each node
//   RTFORGE_TEST_HTTP_URLS  space-separated http://H:P of each node
//   RTFORGE_TEST_CONTROL    http://H:P of the control server
//   RTFORGE_TEST_DEAD_URL   a ws:// URL where nothing listens
import assert from 'node:assert/strict';

function list(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run these tests through pytest (tests/test_js_client.py)`);
  return value.split(/\s+/).filter(Boolean);
}

export const WS_URLS = list('RTFORGE_TEST_WS_URLS');
export const HTTP_URLS = list('RTFORGE_TEST_HTTP_URLS');
export const CONTROL = list('RTFORGE_TEST_CONTROL')[0];
export const DEAD_URL = list('RTFORGE_TEST_DEAD_URL')[0];

let counter = 0;
/** A channel name no other test uses. */
export function uniqueChannel(prefix = 'js') {
  counter += 1;
  return `${prefix}:${process.pid}:${Date.now().toString(36)}:${counter}`;
}

/** Ask the control server to `kill` (SIGKILL), `stop` (SIGTERM) or `start` node `index`. */
export async function control(index, action) {
  const response = await fetch(`${CONTROL}/nodes/${index}/${action}`, { method: 'POST' });
  const text = await response.text();
  assert.equal(response.status, 200, `control ${action} ${index}: ${text}`);
  return JSON.parse(text);
}

/** Publish `payload` (a json message) to `channel` through node `index`'s HTTP API. */
export async function publishHttp(index, channel, payload, type = 'json') {
  const response = await fetch(`${HTTP_URLS[index]}/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message: { type, payload }, channel }),
  });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text).recipients;
}

/** Poll `check` until it returns something truthy. */
export async function waitFor(check, { timeout = 10000, interval = 20, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** The next `event` the client emits (matching `predicate`), within `timeout` ms. */
export function nextEvent(client, event, predicate = () => true, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${event}' event within ${timeout} ms`));
    }, timeout);
    const off = client.on(event, (value) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** Collect the frames a channel handler receives. */
export function collector() {
  const frames = [];
  const handler = (frame) => frames.push(frame);
  handler.frames = frames;
  return handler;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
