// rtforge demo: one RtforgeClient shared by the chat and the dashboard.
//
// Query parameters: nodes=ws://a:3000/ws,ws://b:3001/ws (default: this node),
// user=NAME, room=ROOM; the hash picks the view (#chat, #dashboard).
import { RtforgeClient } from '/clients/rtforge.js';
import { Chat } from '/demo/chat.js';
import { Dashboard } from '/demo/dashboard.js';

const params = new URLSearchParams(location.search);
const here = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const urls = (params.get('nodes') || here).split(',').map((u) => u.trim()).filter(Boolean);

const client = new RtforgeClient(urls, { backoffInitial: 250, backoffMax: 5000 });
window.rtforge = client; // for the console (and the browser test)

const status = document.getElementById('status');
const statusText = document.getElementById('status-text');
function showStatus(state, text, title = '') {
  status.dataset.state = state;
  statusText.textContent = text;
  status.title = title;
}
client.on('open', ({ connectionId, url }) => {
  showStatus('open', `connected · ${new URL(url).host}`, `connection ${connectionId}\n${url}`);
});
client.on('close', ({ code, willReconnect }) => {
  showStatus(willReconnect ? 'connecting' : 'closed', willReconnect ? `reconnecting… (${code})` : 'disconnected');
});

const chat = new Chat(client, {
  user: params.get('user') || localStorage.getItem('rtforge.user') || `guest-${Math.floor(Math.random() * 9000 + 1000)}`,
  room: params.get('room') || 'general',
});
const dashboard = new Dashboard(client);

function route() {
  const view = location.hash === '#dashboard' ? 'dashboard' : 'chat';
  for (const name of ['chat', 'dashboard']) {
    document.getElementById(`view-${name}`).hidden = name !== view;
    document.getElementById(`tab-${name}`).classList.toggle('active', name === view);
  }
  if (view === 'dashboard') dashboard.show();
  else dashboard.hide();
}
window.addEventListener('hashchange', route);
window.addEventListener('pagehide', () => chat.leave());

route();
client.connect();
chat.start();
