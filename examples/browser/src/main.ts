/**
 * The browser / IoT example: connect to any broker node over WebSocket, then call one service
 * with request-response, request-stream (paced by request-n) and fire-and-forget, and show
 * what a request to a service nobody provides gets back. The page holds no state beyond one
 * run; reload it to run again.
 */
import { RSocketConnector } from "rsocket-core";
import type { RSocket } from "rsocket-core";
import { WebsocketClientTransport } from "rsocket-websocket-client";
import { describeError, fireAndForget, requestResponse, requestStream } from "./calls";
import { readConfig } from "./config";
import { runDevice } from "./device";
import type { DemoConfig } from "./config";
import { COMPOSITE_METADATA_MIME, DATA_MIME, setupMetadata } from "./metadata";
import { newReport, render } from "./report";
import type { DemoReport } from "./report";

/** A route whose service no provider registers: shows the broker's immediate REJECTED. */
export const UNSERVED_ROUTE = "com.acme.unserved.ping";

/** Keepalive every 20 s, give up on a broker silent for 90 s (values in milliseconds). */
const KEEPALIVE_MS = 20_000;
const LIFETIME_MS = 90_000;

function connect(config: DemoConfig): Promise<RSocket> {
  const connector = new RSocketConnector({
    setup: {
      dataMimeType: DATA_MIME,
      metadataMimeType: COMPOSITE_METADATA_MIME,
      keepAlive: KEEPALIVE_MS,
      lifetime: LIFETIME_MS,
      payload: { data: null, metadata: setupMetadata(config.token) },
    },
    transport: new WebsocketClientTransport({ url: config.url }),
  });
  // A browser WebSocket "error" event carries no error object, so rsocket-js rejects with
  // `undefined`: name the URL instead, it is the only thing a user can act on.
  return connector.connect().catch((error: unknown) => {
    throw error ?? new Error(`cannot open WebSocket ${config.url}`);
  });
}

async function runCalls(rsocket: RSocket, config: DemoConfig, report: DemoReport, since: number): Promise<void> {
  report.response = await requestResponse(rsocket, `${config.service}.hello`, config.name);
  report.firstReplyMs = performance.now() - since;
  render(report);
  report.stream = await requestStream(rsocket, `${config.service}.count`, String(config.count), config.batch);
  render(report);
  await fireAndForget(rsocket, `${config.service}.log`, `hello from ${config.name}`);
  report.logSent = true;
  render(report);
  try {
    await requestResponse(rsocket, UNSERVED_ROUTE, config.name);
    report.unserved = { code: null, message: "unexpected reply: the route should have no provider" };
  } catch (error) {
    report.unserved = describeError(error);
  }
}

async function run(): Promise<void> {
  const since = performance.now();
  const config = readConfig(window.location.search);
  const report = newReport(config.url);
  render(report);
  if (config.mode === "device") {
    await runDevice(config, report);
    return;
  }
  let rsocket: RSocket | null = null;
  // When the broker closes the connection (a refused SETUP, a drain), rsocket-js fails each
  // open request with a generic "Closed" error; the connection's own error keeps the code.
  let closedBy: Error | undefined;
  try {
    rsocket = await connect(config);
    rsocket.onClose((error) => {
      closedBy = error;
    });
    report.connectMs = performance.now() - since;
    report.state = "running";
    render(report);
    await runCalls(rsocket, config, report, since);
    report.totalMs = performance.now() - since;
    report.state = "done";
  } catch (error) {
    report.error = describeError(closedBy ?? error);
    report.state = "failed";
  } finally {
    rsocket?.close();
  }
  render(report);
}

void run();
