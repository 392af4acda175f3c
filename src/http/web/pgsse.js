// pgsse.js: keeps a keyed collection in sync with a pgsse stream that starts with a snapshot.
// No dependencies; served by the gateway at /pgsse.js (types at /pgsse.d.ts).
//
//   import { live } from "/pgsse.js";
//   const rows = live("/orders/events?snapshot=true&status=eq.open", { key: "id", onChange: render });
//   const mine = live(async () => `/orders/events?snapshot=true&access_token=${await freshToken()}`, { ... });
//
// Snapshot rows are collected until `snapshot-end` and then replace the collection at once; after that,
// inserts and updates upsert, deletes remove, `truncate` and `clear` empty it, and `reset` starts over
// with a fresh snapshot. Every reconnect after `snapshot-end` resumes from the last event seen (it adds
// `last_event_id` to the URL), so tokens may change between connections and nothing is missed.
//
// The collection is a Map by each key's JSON text as the gateway sent it ("42", "\"a-uuid\""): keys
// compare exactly, so 64-bit ids beyond 2^53 and keys that are objects each keep their own row. On a
// stream of several channels the key is the JSON text of [channel, key]: `["orders",42]`.

const DEFAULT_EVENTS = { insert: "insert", update: "update", delete: "delete", truncate: "truncate", clear: "clear" };
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;

export class LiveRows extends Map {
  constructor(url, options = {}) {
    super();
    this.source = null;
    this.url = typeof url === "function" ? null : url;
    this.urlOf = typeof url === "function" ? url : () => url;
    this.fresh = typeof url === "function";
    this.options = options;
    this.events = { ...DEFAULT_EVENTS, ...(options.events || {}) };
    const column = options.key || "id";
    // A function sees the parsed row, whose numbers beyond 2^53 are already rounded: it should return
    // those as strings. A column's key is read from the event's text, every digit kept.
    this.keyOf =
      typeof column === "function"
        ? (row) => canonical(JSON.stringify(column(row)))
        : (row, data, path) => canonical(memberText(path.reduce(memberText, data), column));
    this.ready = false;
    this.lastId = null;
    this.status = "connecting";
    this.pending = new Map();
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.connect();
  }

  // Asks for the URL (a function may hand out a fresh token each time), then opens the stream: resuming
  // after the last event seen once the snapshot is in, else from a new snapshot.
  async connect() {
    this.timer = null;
    let url;
    try {
      url = await this.urlOf();
    } catch (err) {
      return this.failed({ message: `the URL function failed: ${err && err.message ? err.message : err}` });
    }
    if (this.closed) return;
    this.url = url;
    // Without a snapshot yet, any last_event_id (the caller's, or the one a reset named) would skip it.
    const target = withResume(url, this.ready ? this.lastId : null);
    const source = new (this.options.EventSource || EventSource)(target, this.options.init);
    this.source = source;
    source.addEventListener("open", () => {
      // A reconnect before `snapshot-end` gets the whole snapshot again.
      if (!this.ready) this.pending = new Map();
      this.setStatus("open");
    });
    source.addEventListener("error", () => this.dropped(source, target));
    const channels = channelsOf(url);
    if (channels.length > 1) for (const channel of channels) this.listen(source, `${channel}/`, channel);
    else this.listen(source, "", null);
    const on = (name, handler) => source.addEventListener(name, handler);
    on("snapshot-end", (event) => {
      super.clear();
      for (const [key, row] of this.pending) super.set(key, row);
      this.pending = new Map();
      this.ready = true;
      this.seen(event);
      this.changed({ type: "snapshot" });
    });
    on("reset", () => {
      // The log no longer holds what this collection missed: start over from the table itself. A reset
      // before any snapshot has arrived would come again at once: that waits, with backoff.
      source.close();
      const early = !this.ready;
      this.ready = false;
      this.lastId = null;
      this.changed({ type: "reset" });
      if (early) this.retry();
      else this.connect();
    });
  }

  // The row events of one channel: `prefix` is "orders/" on a stream of several channels.
  listen(source, prefix, channel) {
    const on = (name, handler) => source.addEventListener(prefix + name, handler);
    const keyed = (key) => (key === undefined || channel === null ? key : `[${JSON.stringify(channel)},${key}]`);
    on(this.events.insert, (event) => {
      const row = parse(event.data);
      if (!row) return;
      const key = keyed(this.keyOf(row, event.data, []));
      if (this.ready) this.apply("insert", key, row, channel, event);
      else if (key !== undefined) this.pending.set(key, row);
    });
    on(this.events.update, (event) => {
      const row = parse(event.data);
      if (!row || !this.ready) return;
      const nested = row.new && this.options.oldValues;
      const key = keyed(this.keyOf(nested ? row.new : row, event.data, nested ? ["new"] : []));
      this.apply("update", key, nested ? row.new : row, channel, event);
    });
    on(this.events.delete, (event) => {
      const row = parse(event.data);
      if (row && this.ready) this.apply("delete", keyed(this.keyOf(row, event.data, [])), row, channel, event);
    });
    for (const name of [this.events.truncate, this.events.clear]) {
      on(name, (event) => {
        if (!this.ready) return;
        this.seen(event);
        if (channel === null) super.clear();
        else for (const key of [...this.keys()]) if (key.startsWith(`[${JSON.stringify(channel)},`)) super.delete(key);
        this.changed(channel === null ? { type: name } : { type: name, channel });
      });
    }
  }

  apply(type, key, row, channel, event) {
    this.seen(event);
    if (key === undefined) return;
    if (type === "delete") super.delete(key);
    else super.set(key, row);
    this.changed(channel === null ? { type, key, row } : { type, key, row, channel });
  }

  // Backoff counts failures since the last event: a connection that opens and fails again is no success.
  seen(event) {
    this.attempt = 0;
    if (event.lastEventId) this.lastId = event.lastEventId;
  }

  // The browser reconnects a dropped stream by itself, but with the same URL: a URL function's fresh
  // token needs a new EventSource, and so does any answer the browser takes as final (401 at a token's end).
  async dropped(source, target) {
    if (this.closed || source !== this.source) return;
    const refused = source.readyState === 2;
    if (!refused && !this.fresh) return this.setStatus("reconnecting");
    source.close();
    if (!refused) return this.retry();
    const { status, message } = await this.probe(target);
    if (this.closed || source !== this.source) return;
    // A 400 or 404 names a request no retry can fix (a bad filter, a channel that does not exist): it
    // stays closed.
    this.failed({ status, message }, status === 400 || status === 404);
  }

  failed(error, final = false) {
    if (this.closed) return;
    const retryIn = final ? null : this.delay();
    if (this.options.onError) this.options.onError({ ...error, attempt: this.attempt, retryIn });
    if (final) this.close();
    else this.retry(retryIn);
  }

  retry(delay = this.delay()) {
    if (this.closed) return;
    this.attempt += 1;
    this.setStatus("reconnecting");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // Backoff with jitter: 0.5-1 s, then doubling up to 30 s.
  delay() {
    const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** this.attempt);
    return Math.round(ceiling * (0.5 + Math.random() / 2));
  }

  // EventSource hides why it gave up: ask once more with fetch for the status and the gateway's message.
  async probe(url) {
    if (this.options.EventSource || typeof fetch !== "function") return { status: undefined, message: undefined };
    const abort = new AbortController();
    try {
      const credentials = this.options.init && this.options.init.withCredentials ? "include" : "same-origin";
      const response = await fetch(url, { credentials, signal: abort.signal, headers: { Accept: "text/event-stream" } });
      let message;
      if (!response.ok) message = await response.json().then((body) => body && body.error, () => undefined);
      return { status: response.status, message };
    } catch (err) {
      return { status: 0, message: err && err.message ? err.message : String(err) };
    } finally {
      abort.abort();
    }
  }

  changed(change) {
    if (this.options.onChange) this.options.onChange(this, change);
  }

  setStatus(status) {
    this.status = status;
    if (this.options.onStatus) this.options.onStatus(status);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.setStatus("closed");
  }
}

function parse(data) {
  try {
    const row = JSON.parse(data);
    return row && typeof row === "object" ? row : null;
  } catch {
    return null;
  }
}

// The distinct `channel` parameters of a URL: a stream of several channels names each event's channel.
function channelsOf(url) {
  return [...new Set(new URLSearchParams(url.split("#")[0].split("?")[1] || "").getAll("channel"))];
}

// The URL with `last_event_id` set (or left out, for null), every other parameter as written.
function withResume(url, id) {
  const hashAt = url.indexOf("#");
  const hash = hashAt < 0 ? "" : url.slice(hashAt);
  const rest = hashAt < 0 ? url : url.slice(0, hashAt);
  const queryAt = rest.indexOf("?");
  const path = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const params = queryAt < 0 ? [] : rest.slice(queryAt + 1).split("&");
  const named = (param) => new URLSearchParams(param).keys().next().value;
  const kept = params.filter((param) => param && named(param) !== "last_event_id");
  if (id !== null) kept.push(`last_event_id=${encodeURIComponent(id)}`);
  return `${kept.length ? `${path}?${kept.join("&")}` : path}${hash}`;
}

// The text of member `name` of the JSON object `text` (already known to be valid JSON), as written.
function memberText(text, name) {
  if (text === undefined) return undefined;
  let i = space(text, 0);
  if (text[i] !== "{") return undefined;
  i = space(text, i + 1);
  while (text[i] === '"') {
    const nameEnd = valueEnd(text, i);
    const start = space(text, space(text, nameEnd) + 1);
    const end = valueEnd(text, start);
    if (JSON.parse(text.slice(i, nameEnd)) === name) return text.slice(start, end);
    i = space(text, end);
    if (text[i] !== ",") return undefined;
    i = space(text, i + 1);
  }
  return undefined;
}

function space(text, i) {
  while (i < text.length && " \t\n\r".includes(text[i])) i++;
  return i;
}

function valueEnd(text, i) {
  if (text[i] === '"') {
    for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
    return i + 1;
  }
  if (text[i] === "{" || text[i] === "[") {
    for (let depth = 0; i < text.length; i++) {
      if (text[i] === '"') i = valueEnd(text, i) - 1;
      else if (text[i] === "{" || text[i] === "[") depth++;
      else if ((text[i] === "}" || text[i] === "]") && --depth === 0) return i + 1;
    }
    return i;
  }
  while (i < text.length && !",}] \t\n\r".includes(text[i])) i++;
  return i;
}

// One text per key: numbers exactly as sent, anything else re-serialized (so spacing never matters).
function canonical(text) {
  if (text === undefined || text === "null") return undefined;
  return /^-?[0-9]/.test(text) ? text : JSON.stringify(JSON.parse(text));
}

export function live(url, options) {
  return new LiveRows(url, options);
}
