// The token option: appended as ?token= on every connect (browsers cannot set headers).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { RtforgeClient } from '../rtforge.js';

/** A WebSocket stand-in that only records the URL it was opened with. */
function recordingSocket(opened) {
  return class {
    constructor(url) {
      opened.push(url);
      this.readyState = 0;
    }
    close() {}
    send() {}
  };
}

test('a token is appended to the URL, encoded, after any query', () => {
  const opened = [];
  const c = new RtforgeClient(['ws://a/ws', 'ws://b/ws/room?x=1'], {
    token: 'a.b+c/=', WebSocket: recordingSocket(opened), reconnect: false,
  });
  assert.equal(c._withToken('ws://a/ws'), 'ws://a/ws?token=a.b%2Bc%2F%3D');
  assert.equal(c._withToken('ws://b/ws/room?x=1'), 'ws://b/ws/room?x=1&token=a.b%2Bc%2F%3D');
  c.connect().catch(() => {});
  assert.deepEqual(opened, ['ws://a/ws?token=a.b%2Bc%2F%3D']);
  c.close();
});

test('a token function is called at every connect, and no token leaves the URL alone', () => {
  let calls = 0;
  const withFn = new RtforgeClient('ws://a/ws', { token: () => `t${++calls}`, reconnect: false });
  assert.equal(withFn._withToken('ws://a/ws'), 'ws://a/ws?token=t1');
  assert.equal(withFn._withToken('ws://a/ws'), 'ws://a/ws?token=t2');
  const without = new RtforgeClient('ws://a/ws', { reconnect: false });
  assert.equal(without._withToken('ws://a/ws'), 'ws://a/ws');
});
