// The dashboard: every node sends a DashboardMetrics sample per second to the
// channel "dashboard:metrics" while someone watches; this page adds the nodes up
// and draws the cluster's connections and deliveries per second over time.
import { drawChart, colorFor } from '/demo/charts.js';

const CHANNEL = 'dashboard:metrics';
const WINDOW = 120; // points kept (one per second)
const STALE_MS = 3500; // a node silent for longer is left out of the totals

const $ = (id) => document.getElementById(id);
const fmt = (n, digits = 0) => (typeof n === 'number' ? n.toFixed(digits) : '–');

export class Dashboard {
  constructor(client) {
    this.client = client;
    this.latest = new Map(); // node id -> {data, at}
    this.history = []; // {t, connections, deliveries, perNode: {id: {connections, deliveries}}}
    this.visible = false;
    this.timer = null;
    this.handler = (frame) => {
      if (frame.type === 'event' && frame.payload?.event === 'dashboard.metrics') {
        const data = frame.payload.data || {};
        if (typeof data.node_id === 'string') this.latest.set(data.node_id, { data, at: Date.now() });
      }
    };
    window.addEventListener('resize', () => this.draw());
  }

  show() {
    if (this.visible) return;
    this.visible = true;
    this.client.subscribe(CHANNEL, this.handler, { timeout: 30000 }).catch(() => {});
    this.timer = setInterval(() => this.tick(), 1000);
    this.draw();
  }

  hide() {
    if (!this.visible) return;
    this.visible = false;
    clearInterval(this.timer);
    this.client.unsubscribe(CHANNEL, this.handler).catch(() => {});
  }

  fresh() {
    const now = Date.now();
    return [...this.latest.entries()].filter(([, s]) => now - s.at < STALE_MS);
  }

  tick() {
    const fresh = this.fresh();
    const perNode = {};
    let deliveries = 0;
    let requests = 0;
    let connections = 0;
    for (const [id, { data }] of fresh) {
      perNode[id] = { connections: data.connections ?? 0, deliveries: data.deliveries_per_second ?? 0 };
      deliveries += data.deliveries_per_second ?? 0;
      requests += data.requests_per_second ?? 0;
      connections = Math.max(connections, data.active_users ?? 0); // cluster-wide count, any node
    }
    if (fresh.length) {
      this.history.push({ t: Date.now(), connections, deliveries, perNode });
      if (this.history.length > WINDOW) this.history.shift();
    }
    $('m-connections').textContent = fresh.length ? connections : '–';
    $('m-deliveries').textContent = fresh.length ? fmt(deliveries, deliveries < 10 ? 1 : 0) : '–';
    $('m-requests').textContent = fresh.length ? fmt(requests, requests < 10 ? 1 : 0) : '–';
    $('m-nodes').textContent = fresh.length;
    this.renderTable();
    this.draw();
  }

  nodeIds() {
    const ids = new Set();
    for (const point of this.history) Object.keys(point.perNode).forEach((id) => ids.add(id));
    return [...ids].sort();
  }

  series(key, totalLabel) {
    const series = [{
      label: totalLabel, color: '#1d2330', width: 2.5,
      points: this.history.map((p) => [p.t, p[key]]),
    }];
    for (const id of this.nodeIds()) {
      series.push({
        label: id, color: colorFor(id), width: 1.5,
        points: this.history.filter((p) => p.perNode[id]).map((p) => [p.t, p.perNode[id][key]]),
      });
    }
    return series;
  }

  draw() {
    if (!this.visible) return;
    drawChart($('chart-connections'), this.series('connections', 'cluster'), { integer: true });
    drawChart($('chart-deliveries'), this.series('deliveries', 'cluster'), {});
  }

  renderTable() {
    const now = Date.now();
    const rows = [...this.latest.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, { data, at }]) => {
      const tr = document.createElement('tr');
      tr.classList.toggle('stale', now - at >= STALE_MS);
      const name = document.createElement('td');
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = colorFor(id);
      name.append(swatch, document.createTextNode(now - at >= STALE_MS ? `${id} (silent)` : id));
      tr.append(name);
      for (const value of [
        fmt(data.connections), fmt(data.deliveries_per_second, 1), fmt(data.requests_per_second, 1),
        fmt(data.memory_usage_mb, 0), fmt(data.cpu_usage_percent, 1),
      ]) {
        const td = document.createElement('td');
        td.textContent = value;
        tr.append(td);
      }
      return tr;
    });
    $('node-rows').replaceChildren(...rows);
  }
}
