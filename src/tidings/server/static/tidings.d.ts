// Types of tidings.js (docs/javascript.md).

export type TransportName = "ws" | "sse" | "lp" | "stream";
export type State = "connecting" | "open" | "fallback" | "closed";

/** Where a publication came from and where it stands in its channel. */
export interface MessageMeta {
  channel: string;
  /** The publisher's event name, or null. */
  event: string | null;
  offset: number | null;
  epoch: string | null;
  /** The position `channel:offset:epoch`, or null for a channel without positions. */
  id: string | null;
  transport: TransportName;
}

export interface StateInfo {
  transport?: TransportName | null;
  /** connecting: how many reconnect attempts came before this one. */
  attempt?: number;
  /** fallback: the transport that failed to open and the one tried next. */
  from?: TransportName;
  to?: TransportName;
  /** closed: a WebSocket close code, or an HTTP status of a refused request. */
  code?: number;
  status?: number;
  reason?: string;
  /** closed: whether it reconnects, and after how many milliseconds. */
  retry?: boolean;
  delay?: number;
}

/** A gap notice: history couldn't give every publication after the position. */
export interface GapInfo {
  notice: "gap";
  channel: string;
  reason: "history" | "epoch" | "position" | "unfillable" | string;
  expected?: number;
  resumed_from?: number;
  epoch?: string;
}

/** Any other notice of the server: deleted, message (out of band), error, slow,
 * shutdown, disconnect. */
export interface Notice {
  notice: string;
  channel: string;
  [key: string]: unknown;
}

export interface SubscribeOptions {
  /** The hub's base URL; default: where this module was loaded from. */
  url?: string | URL;
  onMessage?(data: unknown, meta: MessageMeta): void;
  onState?(state: State, info: StateInfo): void;
  onGap?(info: GapInfo): void;
  onNotice?(notice: Notice): void;
  /** Publisher event names to listen for on SSE (others are fetched when first seen). */
  events?: string[];
  /** Where to start: an offset for every channel, or a position text `ch:offset:epoch,...`. */
  since?: number | string;
  /** Start with the last N publications of each channel. */
  last?: number;
  /** The transports to try, in order; default ["ws", "sse", "lp", "stream"]. */
  transports?: TransportName[];
  /** Send cookies on cross-origin SSE, long-poll and stream requests. */
  withCredentials?: boolean;
  /** Reconnect delays in milliseconds (defaults 500 and 30000). */
  minDelay?: number;
  maxDelay?: number;
  /** Milliseconds a transport may take to open before the next one is tried (10000). */
  openTimeout?: number;
  /** For tests: replacements of the browser's parts. */
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: typeof fetch;
  random?: () => number;
}

export declare class Subscription {
  readonly channels: string[];
  readonly state: State;
  /** The transport in use (or being opened). */
  readonly transport: TransportName | null;
  /** The position text to resume from. */
  readonly position: string;
  /** Publications received again after a reconnect and dropped. */
  readonly duplicates: number;
  /** Sends over the open WebSocket; false on any other transport or while not open. */
  send(data: unknown): boolean;
  close(): void;
}

export declare function subscribe(channels: string | string[], options?: SubscribeOptions): Subscription;

export declare const TRANSPORTS: readonly TransportName[];

export declare function backoff(
  attempt: number,
  limits?: { min?: number; max?: number },
  random?: () => number,
): number;

export declare function parsePositions(text: string): Map<string, { offset: number; epoch: string }>;

export declare class Positions {
  accept(channel: string, offset: number | undefined, epoch: string | undefined): "new" | "dup" | "skip";
  gap(channel: string, resumedFrom: number, epoch: string): void;
  note(channel: string, offset: number, epoch: string): void;
  readonly size: number;
  toString(): string;
}
