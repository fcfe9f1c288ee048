/**
 * rtforge.js — a small JavaScript client for rtforge (plain ES module, no build step).
 *
 *   import { RtforgeClient } from '/clients/rtforge.js';
 *
 *   const client = new RtforgeClient(['ws://node-a:3000/ws', 'ws://node-b:3000/ws']);
 *   client.on('open', ({ connectionId, url }) => console.log('connected', connectionId, url));
 *   await client.connect();
 *   await client.subscribe('chat:general', (frame) => console.log(frame.payload));
 *   await client.publish('chat:general', { text: 'hi' }, { event: 'chat.message' });
 *   const n = await client.presence('chat:general');
 *
 * What it does for you:
 * - reads the welcome frame (`connectionId`) before it reports the connection open;
 * - runs commands (subscribe, unsubscribe, publish, presence, list_channels, ping)
 *   as promises matched to their replies by id, each with a timeout;
 * - hands channel frames to the handlers of that channel;
 * - answers the server's `ping` frames with `pong`;
 * - reconnects by itself with jittered exponential backoff, trying the next URL of
 *   its list each time, at once (no backoff) when the server closes with 1012
 *   (node restarting), and subscribes again to every channel it had;
 * - commands issued while it is reconnecting wait for the connection (within their
 *   timeout) instead of failing.
 *
 * Events (`client.on(name, fn)` returns a function that removes the listener):
 *   open      {connectionId, url, reconnected}   connected, welcome read, channels re-subscribed
 *   close     {code, reason, url, willReconnect}  the connection ended
 *   reconnecting {attempt, delay, url}            a reconnect is scheduled
 *   frame     frame                               every frame received
 *   message   frame                               frames no reply or channel handler took
 *   channelDeleted channel                        the server deleted a subscribed channel
 *   error     Error                               a re-subscribe failed, a frame was not JSON, ...
 *
 * Works in browsers and in Node.js 22+ (or 20 with --experimental-websocket); pass
 * `options.WebSocket` to use another implementation.
 */

export const DEFAULT_OPTIONS = Object.freeze({
  requestTimeout: 5000, // ms until a command's promise rejects with code "timeout"
  connectTimeout: 5000, // ms for one connection attempt (open + welcome)
  reconnect: true,
  backoffInitial: 250, // ms before the first retry
  backoffMax: 10000, // ms, cap of the backoff
  backoffFactor: 2,
  jitter: 0.5, // the last `jitter` fraction of each delay is random
  idleTimeout: 0, // ms without any frame after which the connection counts as dead (0: off)
  protocols: undefined,
  token: undefined, // JWT, or a function returning one (called at every connect): sent as ?token=
  WebSocket: undefined, // constructor; default globalThis.WebSocket
  random: Math.random,
});

/** A command failed: `code` is the server's error code, or "timeout", "connection_lost", "closed". */
export class RtforgeError extends Error {
  constructor(message, code, reply = null) {
    super(message);
    this.name = 'RtforgeError';
    this.code = code;
    this.reply = reply;
  }
}

const OPEN = 1;
let instances = 0;

export class RtforgeClient {
  /**
   * @param {string|string[]} urls one WebSocket URL (`ws://host:port/ws`) or several nodes of a cluster
   * @param {object} options see DEFAULT_OPTIONS
   */
  constructor(urls, options = {}) {
    this.urls = (Array.isArray(urls) ? urls : [urls]).filter(Boolean);
    if (this.urls.length === 0) throw new TypeError('RtforgeClient needs at least one URL');
    this.options = { ...DEFAULT_OPTIONS, ...options };
    this.WebSocket = this.options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('no WebSocket implementation: pass options.WebSocket');
    this.state = 'idle'; // idle | connecting | open | reconnecting | closed
    this.connectionId = null;
    this.url = null;
    this.attempt = 0; // failed attempts since the last open connection
    this.connects = 0; // connections opened so far
    this._urlIndex = 0;
    this._ws = null;
    this._listeners = new Map();
    this._channels = new Map(); // channel -> Set of handlers
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._waiters = new Set(); // {resolve, reject} waiting for 'open'
    this._ids = 0;
    this._idPrefix = `c${++instances}${Math.floor(this.options.random() * 1e6).toString(36)}`;
    this._retryTimer = null;
    this._connectTimer = null;
    this._idleTimer = null;
    this._welcomed = false;
  }

  // -- events ---------------------------------------------------------------
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, value) {
    for (const fn of [...(this._listeners.get(event) || [])]) {
      try {
        fn(value);
      } catch (err) {
        if (event !== 'error') this._emit('error', err);
      }
    }
  }

  // -- connection -----------------------------------------------------------
  /** Connect (if not yet) and resolve once the connection is open: `{connectionId, url}`. */
  connect() {
    if (this.state === 'closed') return Promise.reject(new RtforgeError('client closed', 'closed'));
    const ready = this.ready(0);
    if (this.state === 'idle') this._open();
    return ready;
  }

  /** Resolve once the connection is open (at once if it is); reject after `timeout` ms (0: never). */
  ready(timeout = this.options.requestTimeout) {
    if (this.state === 'open') return Promise.resolve({ connectionId: this.connectionId, url: this.url });
    if (this.state === 'closed') return Promise.reject(new RtforgeError('client closed', 'closed'));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, timer: null };
      if (timeout > 0) {
        waiter.timer = setTimeout(() => {
          this._waiters.delete(waiter);
          reject(new RtforgeError(`not connected within ${timeout} ms`, 'timeout'));
        }, timeout);
      }
      this._waiters.add(waiter);
    });
  }

  /** Close for good: no reconnect; pending commands reject with code "closed". */
  close(code = 1000, reason = '') {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this._retryTimer);
    const ws = this._ws;
    this._detach();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this._failPending('client closed', 'closed');
    for (const waiter of this._waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(new RtforgeError('client closed', 'closed'));
    }
    this._waiters.clear();
    this._emit('close', { code, reason, url: this.url, willReconnect: false });
  }

  /** `url` with the token as `?token=` (browsers cannot set headers on a WebSocket). */
  _withToken(url) {
    const option = this.options.token;
    const token = typeof option === 'function' ? option() : option;
    if (!token) return url;
    return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
  }

  _open() {
    this.state = this.connects === 0 && this.attempt === 0 ? 'connecting' : 'reconnecting';
    const url = this.urls[this._urlIndex % this.urls.length];
    this.url = url;
    this._welcomed = false;
    let ws;
    try {
      const target = this._withToken(url);
      ws = this.options.protocols ? new this.WebSocket(target, this.options.protocols) : new this.WebSocket(target);
    } catch (err) {
      this._emit('error', err);
      this._lost(ws, { code: 1006, reason: String(err) });
      return;
    }
    this._ws = ws;
    ws.onmessage = (ev) => this._onRaw(ws, ev.data);
    ws.onclose = (ev) => this._lost(ws, { code: ev.code, reason: ev.reason });
    // Browsers follow an error with a close event; some implementations (Node 20) do not.
    ws.onerror = () => setTimeout(() => this._lost(ws, { code: 1006, reason: 'connection error' }), 50);
    this._connectTimer = setTimeout(() => this._abandon(ws, 'connect timeout'), this.options.connectTimeout);
  }

  /** Give up on a socket that does not answer (connect or idle timeout). */
  _abandon(ws, reason) {
    if (ws !== this._ws) return;
    try {
      ws.close();
    } catch {
      /* ignore */
    }
    this._lost(ws, { code: 4000, reason });
  }

  _detach() {
    clearTimeout(this._connectTimer);
    clearTimeout(this._idleTimer);
    const ws = this._ws;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
    }
    this._ws = null;
  }

  _lost(ws, { code, reason }) {
    if (ws !== undefined && ws !== this._ws) return; // an old socket
    this._detach();
    this.connectionId = null;
    this._failPending(`connection lost (${code})`, 'connection_lost');
    if (this.state === 'closed') return;
    const willReconnect = Boolean(this.options.reconnect);
    this._emit('close', { code, reason, url: this.url, willReconnect });
    if (!willReconnect) {
      this.state = 'closed';
      for (const waiter of this._waiters) {
        clearTimeout(waiter.timer);
        waiter.reject(new RtforgeError(`connection closed (${code})`, 'connection_lost'));
      }
      this._waiters.clear();
      return;
    }
    this.state = 'reconnecting';
    this._urlIndex = (this._urlIndex + 1) % this.urls.length; // try the next node
    const delay = code === 1012 ? 0 : this.backoff(this.attempt);
    this.attempt += 1;
    const next = this.urls[this._urlIndex];
    this._emit('reconnecting', { attempt: this.attempt, delay, url: next });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      if (this.state !== 'closed') this._open();
    }, delay);
  }

  /** The delay in ms before retry number `attempt` (0-based): exponential, capped, jittered. */
  backoff(attempt) {
    const { backoffInitial, backoffMax, backoffFactor, jitter, random } = this.options;
    const base = Math.min(backoffMax, backoffInitial * backoffFactor ** attempt);
    return Math.round(base * (1 - jitter) + base * jitter * random());
  }

  async _welcome(ws, frame) {
    clearTimeout(this._connectTimer);
    this.connectionId = frame.metadata?.connection_id ?? null;
    const reconnected = this.connects > 0;
    const channels = [...this._channels.keys()];
    await Promise.all(
      channels.map((channel) =>
        this._request('subscribe', { channel }, { internal: true }).catch((err) => {
          if (err.code !== 'connection_lost' && err.code !== 'closed') {
            this._channels.delete(channel);
            this._emit('error', new RtforgeError(`re-subscribe to ${channel} failed: ${err.message}`, err.code, err.reply));
          }
        }),
      ),
    );
    if (ws !== this._ws || this.state === 'closed') return;
    this.state = 'open';
    this.attempt = 0;
    this.connects += 1;
    const info = { connectionId: this.connectionId, url: this.url, reconnected };
    for (const waiter of this._waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve({ connectionId: this.connectionId, url: this.url });
    }
    this._waiters.clear();
    this._emit('open', info);
  }

  // -- frames ---------------------------------------------------------------
  _onRaw(ws, data) {
    if (ws !== this._ws) return;
    if (this.options.idleTimeout > 0) {
      clearTimeout(this._idleTimer);
      this._idleTimer = setTimeout(() => this._abandon(ws, 'idle timeout'), this.options.idleTimeout);
    }
    let frame;
    try {
      frame = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch (err) {
      this._emit('error', new RtforgeError(`frame is not JSON: ${err.message}`, 'bad_frame'));
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    this._emit('frame', frame);
    if (!this._welcomed) {
      // the first frame of every connection is the welcome (it carries the connection id)
      this._welcomed = true;
      this._welcome(ws, frame);
      if (frame.type === 'system' && frame.metadata?.connection_id) return;
    }
    if (frame.type === 'ping') {
      this.send({ type: 'pong' });
      return;
    }
    const meta = frame.metadata || {};
    if (meta.id !== undefined && this._pending.has(meta.id)) {
      const pending = this._pending.get(meta.id);
      this._pending.delete(meta.id);
      clearTimeout(pending.timer);
      if (meta.ok === false) {
        pending.reject(new RtforgeError(String(frame.payload), meta.error || 'error', frame));
      } else {
        pending.resolve(frame);
      }
      return;
    }
    if (typeof frame.channel === 'string' && this._channels.has(frame.channel)) {
      const channel = frame.channel;
      for (const handler of [...this._channels.get(channel)]) {
        try {
          handler(frame);
        } catch (err) {
          this._emit('error', err);
        }
      }
      if (frame.type === 'system' && meta.event === 'channel_deleted') {
        this._channels.delete(channel);
        this._emit('channelDeleted', channel);
      }
      return;
    }
    this._emit('message', frame);
  }

  /** Send a raw frame (an object is JSON-encoded); false when not connected. */
  send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    return true;
  }

  // -- commands -------------------------------------------------------------
  /** Run any command; resolves with the reply frame, rejects with RtforgeError. */
  command(name, fields = {}, { timeout } = {}) {
    return this._request(name, fields, { timeout });
  }

  async _request(name, fields, { timeout, internal = false } = {}) {
    const limit = timeout ?? this.options.requestTimeout;
    const deadline = Date.now() + limit;
    if (!internal && this.state !== 'open') {
      if (this.state === 'idle') this._open();
      await this.ready(limit);
    }
    const id = `${this._idPrefix}-${++this._ids}`;
    return new Promise((resolve, reject) => {
      const remaining = Math.max(deadline - Date.now(), 1);
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RtforgeError(`${name}: no reply within ${limit} ms`, 'timeout'));
      }, remaining);
      this._pending.set(id, { resolve, reject, timer });
      if (!this.send({ type: 'system', payload: { command: name, id, ...fields } })) {
        this._pending.delete(id);
        clearTimeout(timer);
        reject(new RtforgeError(`${name}: not connected`, 'connection_lost'));
      }
    });
  }

  _failPending(message, code) {
    for (const [id, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new RtforgeError(message, code));
      this._pending.delete(id);
    }
  }

  /**
   * Subscribe to `channel`; `handler(frame)` gets every frame delivered through it, also
   * after reconnects. Resolves with the reply frame.
   */
  async subscribe(channel, handler, options = {}) {
    const fresh = !this._channels.has(channel);
    if (fresh) this._channels.set(channel, new Set());
    if (handler) this._channels.get(channel).add(handler);
    try {
      return await this._request('subscribe', { channel }, options);
    } catch (err) {
      if (err.code !== 'timeout' && err.code !== 'connection_lost') {
        // refused by the server: forget it (a lost connection re-subscribes on its own)
        if (handler) this._channels.get(channel)?.delete(handler);
        if (fresh) this._channels.delete(channel);
      }
      throw err;
    }
  }

  /** Remove `handler` (or all handlers); when none is left, unsubscribe from `channel`. */
  async unsubscribe(channel, handler, options = {}) {
    const handlers = this._channels.get(channel);
    if (handlers && handler) handlers.delete(handler);
    if (handlers && handler && handlers.size > 0) return null;
    this._channels.delete(channel);
    return this._request('unsubscribe', { channel }, options);
  }

  /** The channels this client is subscribed to (and re-subscribes to after a reconnect). */
  channels() {
    return [...this._channels.keys()];
  }

  /** Publish `data` to `channel` (as an `event` frame when `event` is given); resolves with the recipient count. */
  async publish(channel, data, { event, ...options } = {}) {
    const fields = { channel, data };
    if (event) fields.event = event;
    const reply = await this._request('publish', fields, options);
    return reply.metadata?.recipients ?? 0;
  }

  /** Connections subscribed to `channel`, cluster-wide. */
  async presence(channel, options = {}) {
    const reply = await this._request('presence', { channel }, options);
    return reply.payload?.count ?? 0;
  }

  /** Channel names the server lists. */
  async listChannels(options = {}) {
    const reply = await this._request('list_channels', {}, options);
    return reply.payload?.channels ?? [];
  }

  /** A command round trip; resolves with the time it took in ms. */
  async ping(options = {}) {
    const started = Date.now();
    await this._request('ping', {}, options);
    return Date.now() - started;
  }
}

export default RtforgeClient;
