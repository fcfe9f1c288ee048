// The chat: rooms are channels "chat:<room>"; messages and join/leave notices are
// events on them, in the format of service/examples/chat.py's ChatService.
const PREFIX = 'chat:';
const PRESENCE_EVERY = 2000;
const ROOMS_EVERY = 5000;

const $ = (id) => document.getElementById(id);

function newId() {
  return (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/-/g, '');
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export class Chat {
  constructor(client, { user, room }) {
    this.client = client;
    this.user = user;
    this.room = null;
    this.firstRoom = room;
    this.rooms = new Set([room]);
    this.seen = new Set(); // message ids, so a message is shown once
    this.handler = (frame) => this.onFrame(frame);
    this.wasOpen = false;
  }

  start() {
    $('user').value = this.user;
    $('user').addEventListener('change', () => {
      const name = $('user').value.trim().slice(0, 64);
      if (!name || name === this.user) return;
      const old = this.user;
      this.user = name;
      localStorage.setItem('rtforge.user', name);
      this.announce('chat.user_left', old);
      this.announce('chat.user_joined', name);
    });
    $('composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.send($('text').value);
    });
    $('new-room').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = $('new-room-name').value.trim();
      $('new-room-name').value = '';
      if (name) this.join(name);
    });
    this.client.on('open', ({ url, reconnected }) => {
      if (reconnected) this.notice(`reconnected via ${new URL(url).host}`);
      this.refreshPresence();
      this.refreshRooms();
    });
    this.client.on('close', ({ willReconnect }) => {
      if (this.wasOpen && willReconnect) this.notice('connection lost — reconnecting…', 'warn');
      this.wasOpen = false;
    });
    this.client.on('open', () => { this.wasOpen = true; });
    setInterval(() => this.refreshPresence(), PRESENCE_EVERY);
    setInterval(() => this.refreshRooms(), ROOMS_EVERY);
    this.join(this.firstRoom);
  }

  async join(room) {
    if (room === this.room) return;
    if (this.room) await this.leave();
    this.room = room;
    this.rooms.add(room);
    $('room-title').textContent = `#${room}`;
    $('messages').replaceChildren();
    this.renderRooms();
    try {
      await this.client.subscribe(PREFIX + room, this.handler, { timeout: 30000 });
    } catch (err) {
      this.notice(`could not join #${room}: ${err.message}`, 'warn');
      return;
    }
    this.announce('chat.user_joined', this.user);
    this.refreshPresence();
  }

  async leave() {
    const room = this.room;
    if (!room) return;
    this.room = null;
    this.announce('chat.user_left', this.user, room);
    try {
      await this.client.unsubscribe(PREFIX + room, this.handler);
    } catch {
      /* the connection may be gone: nothing to undo */
    }
  }

  announce(event, user, room = this.room) {
    if (!room) return;
    this.client.publish(PREFIX + room, { room, user }, { event }).catch(() => {});
  }

  async send(text) {
    text = text.trim();
    if (!text || !this.room) return;
    $('text').value = '';
    const data = { room: this.room, id: newId(), user: this.user, text, sent_at: Date.now() / 1000 };
    try {
      await this.client.publish(PREFIX + this.room, data, { event: 'chat.message', timeout: 30000 });
    } catch (err) {
      this.notice(`not sent: ${err.message}`, 'warn');
      $('text').value = text;
    }
  }

  onFrame(frame) {
    if (frame.type !== 'event' || frame.channel !== PREFIX + this.room) return;
    const { event, data } = frame.payload || {};
    if (!data || typeof data !== 'object') return;
    if (event === 'chat.message') {
      if (typeof data.id === 'string') {
        if (this.seen.has(data.id)) return;
        this.seen.add(data.id);
      }
      this.message(data, frame.timestamp);
    } else if (event === 'chat.user_joined') {
      this.notice(`${data.user} joined #${data.room}`);
      this.refreshPresence();
    } else if (event === 'chat.user_left') {
      this.notice(`${data.user} left #${data.room}`);
      this.refreshPresence();
    }
  }

  message({ user, text, sent_at: sentAt }, serverTime) {
    const li = document.createElement('li');
    li.className = 'message';
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = clock(typeof sentAt === 'number' && sentAt > 0 ? sentAt : serverTime || Date.now() / 1000);
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = String(user);
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = String(text);
    li.append(time, who, body);
    this.append(li);
  }

  notice(text, kind = '') {
    const li = document.createElement('li');
    li.className = `notice ${kind}`.trim();
    li.textContent = text;
    this.append(li);
  }

  append(li) {
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(li);
    while (list.children.length > 500) list.firstChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  async refreshPresence() {
    if (!this.room || this.client.state !== 'open') return;
    const room = this.room;
    try {
      const count = await this.client.presence(PREFIX + room);
      if (room === this.room) $('presence').textContent = `${count} online`;
    } catch {
      /* try again on the next tick */
    }
  }

  async refreshRooms() {
    if (this.client.state !== 'open') return;
    try {
      for (const name of await this.client.listChannels()) {
        if (name.startsWith(PREFIX) && name.length > PREFIX.length) this.rooms.add(name.slice(PREFIX.length));
      }
    } catch {
      return;
    }
    this.renderRooms();
  }

  renderRooms() {
    const items = [...this.rooms].sort().map((room) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = `#${room}`;
      button.dataset.room = room;
      button.classList.toggle('active', room === this.room);
      button.addEventListener('click', () => this.join(room));
      li.append(button);
      return li;
    });
    $('rooms').replaceChildren(...items);
  }
}
