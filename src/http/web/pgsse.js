// pgsse.js: keeps a keyed collection in sync with a pgsse stream that starts with a snapshot.
// No dependencies; served by the gateway at /pgsse.js (types at /pgsse.d.ts).
//
//   import { live } from "/pgsse.js";
//   const rows = live("/orders/events?snapshot=true&status=eq.open", { key: "id", onChange: render });
//
// Snapshot rows are collected until `snapshot-end` and then replace the collection at once; after that,
// inserts and updates upsert, deletes remove, `truncate` and `clear` empty it, and `reset` starts over
// with a fresh snapshot. The browser's EventSource reconnects by itself: before `snapshot-end` it has no
// id yet and gets a new snapshot, after it resumes with Last-Event-ID.
//
// The collection is a Map by each key's JSON text as the gateway sent it ("42", "\"a-uuid\""): keys
// compare exactly, so 64-bit ids beyond 2^53 and keys that are objects each keep their own row.

const DEFAULT_EVENTS = { insert: "insert", update: "update", delete: "delete", truncate: "truncate", clear: "clear" };

export class LiveRows extends Map {
  constructor(url, options = {}) {
    super();
    this.url = url;
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
    this.status = "connecting";
    this.source = null;
    this.pending = null;
    this.connect();
  }

  connect() {
    this.pending = new Map();
    this.ready = false;
    const source = new (this.options.EventSource || EventSource)(this.url, this.options.init);
    this.source = source;
    source.addEventListener("open", () => {
      // A reconnect before `snapshot-end` gets the whole snapshot again.
      if (!this.ready) this.pending = new Map();
      this.setStatus("open");
    });
    source.addEventListener("error", () => {
      this.setStatus(source.readyState === 2 ? "closed" : "reconnecting");
    });
    const on = (name, handler) => source.addEventListener(name, (event) => handler(event));
    on(this.events.insert, (event) => {
      const row = parse(event.data);
      if (!row) return;
      const key = this.keyOf(row, event.data, []);
      if (this.ready) this.apply("insert", key, row);
      else if (key !== undefined) this.pending.set(key, row);
    });
    on(this.events.update, (event) => {
      const row = parse(event.data);
      if (!row || !this.ready) return;
      const nested = row.new && this.options.oldValues;
      this.apply("update", this.keyOf(nested ? row.new : row, event.data, nested ? ["new"] : []), nested ? row.new : row);
    });
    on(this.events.delete, (event) => {
      const row = parse(event.data);
      if (row && this.ready) this.apply("delete", this.keyOf(row, event.data, []), row);
    });
    for (const name of [this.events.truncate, this.events.clear]) {
      on(name, () => {
        if (!this.ready) return;
        super.clear();
        this.changed({ type: name });
      });
    }
    on("snapshot-end", () => {
      super.clear();
      for (const [key, row] of this.pending) super.set(key, row);
      this.pending = new Map();
      this.ready = true;
      this.changed({ type: "snapshot" });
    });
    on("reset", () => {
      // The log no longer holds what this collection missed: start over from the table itself.
      source.close();
      this.changed({ type: "reset" });
      this.connect();
    });
  }

  apply(type, key, row) {
    if (key === undefined) return;
    if (type === "delete") super.delete(key);
    else super.set(key, row);
    this.changed({ type, key, row });
  }

  changed(change) {
    if (this.options.onChange) this.options.onChange(this, change);
  }

  setStatus(status) {
    this.status = status;
    if (this.options.onStatus) this.options.onStatus(status);
  }

  close() {
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
