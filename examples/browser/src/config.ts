/**
 * What the page does, read from its query string so that one static page serves a developer
 * (defaults match `rsbroker serve --ws 127.0.0.1:7001`) and the browser test (random ports).
 * Never throws: a bad number falls back to its default, so the page always shows something.
 */

export const DEFAULT_BROKER_URL = "ws://127.0.0.1:7001/rsocket";

export interface DemoConfig {
  /** WebSocket URL of any broker node, path `/rsocket`. */
  readonly url: string;
  /** Bearer JWT sent in SETUP as `message/x.rsocket.authentication.v0`; null for anonymous. */
  readonly token: string | null;
  /** Service whose `hello`, `count` and `log` methods the page calls (default: the `rsbroker demo` provider). */
  readonly service: string;
  /** Name sent to `hello` and in the `log` message. */
  readonly name: string;
  /** How many items the page asks `count` to stream. */
  readonly count: number;
  /** Credits per REQUEST_N: the stream is requested `batch` items at a time. */
  readonly batch: number;
  /** "demo" calls a service; "device" registers `device.<deviceId>` and answers calls (device.ts). */
  readonly mode: "demo" | "device";
  /** The device's number, in its service name `device.<id>`. */
  readonly deviceId: string;
  /** Nodes a device fails over across (WebSocket URLs); empty: just `url`. */
  readonly nodes: string[];
}

function positiveInt(raw: string | null, fallback: number, max: number): number {
  if (raw === null || !/^\d+$/.test(raw)) {
    return fallback;
  }
  const value = Number(raw);
  return value >= 1 && value <= max ? value : fallback;
}

/** Builds the config from `location.search` (e.g. `?url=ws://h:p/rsocket&count=5&batch=2`). */
export function readConfig(search: string): DemoConfig {
  const query = new URLSearchParams(search);
  const token = query.get("token");
  return {
    url: query.get("url") || DEFAULT_BROKER_URL,
    token: token ? token : null,
    service: query.get("service") || "demo.greeter",
    name: query.get("name") || "browser",
    count: positiveInt(query.get("count"), 5, 10_000),
    batch: positiveInt(query.get("batch"), 2, 1_000),
    mode: query.get("mode") === "device" ? "device" : "demo",
    deviceId: /^[A-Za-z0-9_-]{1,64}$/.test(query.get("id") ?? "") ? (query.get("id") as string) : "1",
    nodes: (query.get("nodes") ?? "").split(",").map((n) => n.trim()).filter((n) => n.length > 0),
  };
}
