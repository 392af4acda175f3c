// Types of /pgsse.js.

export type Row = Record<string, unknown>;

export interface Change<R extends Row = Row> {
  /** "snapshot" once the snapshot replaced the collection; then each change as it arrives. */
  type: "snapshot" | "insert" | "update" | "delete" | "truncate" | "clear" | "reset" | string;
  /** The row's key as JSON text, exactly as the gateway sent it: "42", "\"a-uuid\"", "{\"k\":1}". */
  key?: string;
  row?: R;
}

export interface LiveOptions<R extends Row = Row> {
  /** The row's key: a column name (default "id"), read from the event's text with every digit, or a
   *  function of the parsed row (return numbers beyond 2^53 as strings: parsing has rounded them). */
  key?: string | ((row: R) => unknown);
  /** Called after every change, with the collection. */
  onChange?: (rows: LiveRows<R>, change: Change<R>) => void;
  /** "connecting", "open", "reconnecting" or "closed". */
  onStatus?: (status: string) => void;
  /** The channel's event names, where `pgsse.publish_table` renamed them. */
  events?: Partial<Record<"insert" | "update" | "delete" | "truncate" | "clear", string>>;
  /** The channel publishes updates as {new, old} (`old_values => true`). */
  oldValues?: boolean;
  /** Passed to EventSource, e.g. { withCredentials: true }. */
  init?: EventSourceInit;
  /** Another EventSource implementation (one that sends headers, say). */
  EventSource?: typeof EventSource;
}

/** A Map by each row key's JSON text (`rows.get("42")`), so keys compare exactly. */
export declare class LiveRows<R extends Row = Row> extends Map<string, R> {
  readonly url: string;
  /** True once the snapshot has arrived. */
  readonly ready: boolean;
  readonly status: string;
  close(): void;
}

export declare function live<R extends Row = Row>(url: string, options?: LiveOptions<R>): LiveRows<R>;
