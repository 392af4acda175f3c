// Types of /pgsse.js.

export type Row = Record<string, unknown>;

export interface Change<R extends Row = Row> {
  /** "snapshot" once the snapshot replaced the collection; then each change as it arrives. */
  type: "snapshot" | "insert" | "update" | "delete" | "truncate" | "clear" | "reset" | string;
  /** The row's key as JSON text, exactly as the gateway sent it: "42", "\"a-uuid\"", "{\"k\":1}"; on a
   *  stream of several channels, that of [channel, key]: "[\"orders\",42]". */
  key?: string;
  row?: R;
  /** On a stream of several channels: the channel the change is of. */
  channel?: string;
}

/** Why a connection failed; live() tries again after `retryIn` ms unless it is null. */
export interface LiveError {
  /** The gateway's HTTP status (401 once a token has expired), 0 when it could not be reached, undefined
   *  when it is not known (a custom EventSource, or the URL function failed). */
  status?: number;
  /** The gateway's `error` text, or what failed. */
  message?: string;
  /** Failures since the last event received, before this one. */
  attempt: number;
  /** Milliseconds until the next try; null when live() gave up (a 400 or 404: the request itself is wrong). */
  retryIn: number | null;
}

export interface LiveOptions<R extends Row = Row> {
  /** The row's key: a column name (default "id"), read from the event's text with every digit, or a
   *  function of the parsed row (return numbers beyond 2^53 as strings: parsing has rounded them). */
  key?: string | ((row: R) => unknown);
  /** Called after every change, with the collection. */
  onChange?: (rows: LiveRows<R>, change: Change<R>) => void;
  /** "connecting", "open", "reconnecting" or "closed". */
  onStatus?: (status: string) => void;
  /** Called when the gateway refuses a connection (a 401 when a token has expired) or the URL function
   *  fails; live() asks for the URL again and retries with backoff (0.5-1 s, doubling to 30 s). */
  onError?: (error: LiveError) => void;
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
  /** The URL of the latest connection, as given or as the URL function returned it. */
  readonly url: string | null;
  /** True once the snapshot has arrived. */
  readonly ready: boolean;
  readonly status: string;
  close(): void;
}

/** `url` may be a function (sync or async) called before every connection, to put a fresh token in it. */
export declare function live<R extends Row = Row>(
  url: string | (() => string | Promise<string>),
  options?: LiveOptions<R>,
): LiveRows<R>;
