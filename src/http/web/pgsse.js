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

const DEFAULT_EVENTS = { insert: "insert", update: "update", delete: "delete", truncate: "truncate", clear: "clear" };

export class LiveRows extends Map {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.events = { ...DEFAULT_EVENTS, ...(options.events || {}) };
    this.keyOf = typeof options.key === "function" ? options.key : (row) => row[options.key || "id"];
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
      if (this.ready) this.apply("insert", row);
      else this.pending.set(this.keyOf(row), row);
    });
    on(this.events.update, (event) => {
      const row = parse(event.data);
      if (row && this.ready) this.apply("update", row.new && this.options.oldValues ? row.new : row);
    });
    on(this.events.delete, (event) => {
      const row = parse(event.data);
      if (row && this.ready) this.apply("delete", row);
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

  apply(type, row) {
    const key = this.keyOf(row);
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

export function live(url, options) {
  return new LiveRows(url, options);
}
