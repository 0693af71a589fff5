/**
 * The page's outcome, kept in one object that is both rendered and published as
 * `window.rsbroker` so that a test (or a curious developer in the console) reads exactly what
 * the page shows. Rendering uses `textContent` only: payloads come from the network.
 */
import type { CallError, StreamOutcome } from "./calls";

export type DemoState = "connecting" | "running" | "done" | "failed";

export interface DemoReport {
  state: DemoState;
  url: string;
  /** Reply of request-response `<service>.hello`. */
  response: string | null;
  /** Items and credit grants of request-stream `<service>.count`. */
  stream: StreamOutcome | null;
  /** True once fire-and-forget `<service>.log` was sent. */
  logSent: boolean;
  /** The error for a route that no provider serves (the broker answers REJECTED at once). */
  unserved: CallError | null;
  /** Milliseconds from page start: WebSocket open and SETUP sent. */
  connectMs: number | null;
  /** Milliseconds from page start: first reply received (the broker accepted the SETUP). */
  firstReplyMs: number | null;
  /** Milliseconds from page start: every call finished. */
  totalMs: number | null;
  /** Why the run stopped, when state is "failed" (a device: its last failed attempt). */
  error: CallError | null;
  /** Device mode only: its service, the node it is on (null while reconnecting), how many
   * times it connected, attempts made, calls answered. */
  device?: { service: string; node: string | null; connects: number; attempts: number; calls: number };
}

declare global {
  interface Window {
    rsbroker: DemoReport;
  }
}

export function newReport(url: string): DemoReport {
  return {
    state: "connecting",
    url,
    response: null,
    stream: null,
    logSent: false,
    unserved: null,
    connectMs: null,
    firstReplyMs: null,
    totalMs: null,
    error: null,
  };
}

function show(id: string, text: string): void {
  const element = document.getElementById(id);
  if (element !== null) {
    element.textContent = text;
  }
}

function formatError(error: CallError | null): string {
  if (error === null) {
    return "-";
  }
  return error.code === null ? error.message : `0x${error.code.toString(16)} ${error.message}`;
}

function formatMs(ms: number | null): string {
  return ms === null ? "-" : `${ms.toFixed(1)} ms`;
}

/** Publishes the report on `window` and copies it into the page's fields. */
export function render(report: DemoReport): void {
  window.rsbroker = report;
  document.body.dataset.state = report.state;
  show("state", report.state);
  show("url", report.url);
  show("response", report.response ?? "-");
  show(
    "stream",
    report.stream === null
      ? "-"
      : `${report.stream.items.join(", ")}  (credits granted: ${report.stream.requests.join(" + ")})`,
  );
  show("log", report.logSent ? "sent" : "-");
  show("unserved", formatError(report.unserved));
  show(
    "timing",
    `connected ${formatMs(report.connectMs)}, first reply ${formatMs(report.firstReplyMs)}, ` +
      `all done ${formatMs(report.totalMs)}`,
  );
  show("error", formatError(report.error));
}
