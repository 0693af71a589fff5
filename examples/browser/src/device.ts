/**
 * The page as an IoT device: it registers its own service `device.<id>` in its SETUP and
 * answers request-response calls to `device.<id>.ping` (echo) from any node of the cluster.
 * When its node goes away (killed, drained, partitioned) it connects to the next node of its
 * list after a full-jitter backoff, and registers there again. The node list comes from the
 * page config (`?nodes=ws://a/rsocket,ws://b/rsocket`).
 *
 * The outcome is published as `window.rsbroker.device` (see report.ts): the node it is on,
 * how many times it connected, how many calls it answered.
 */
import { RSocketConnector } from "rsocket-core";
import type { OnExtensionSubscriber, OnNextSubscriber, OnTerminalSubscriber, Payload, RSocket } from "rsocket-core";
import { WebsocketClientTransport } from "rsocket-websocket-client";
import { describeError } from "./calls";
import type { DemoConfig } from "./config";
import { COMPOSITE_METADATA_MIME, DATA_MIME, deviceSetupMetadata, routeOf } from "./metadata";
import { render } from "./report";
import type { DemoReport } from "./report";

/** Keepalive and lifetime of a device (ms): a silent node is left after 6 s at most. */
const KEEPALIVE_MS = 2_000;
const LIFETIME_MS = 6_000;
/** Backoff between attempts (ms): full jitter up to min(cap, base * 2^attempt). */
const BACKOFF_BASE_MS = 100;
const BACKOFF_CAP_MS = 2_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function backoff(attempt: number): number {
  return Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 20));
}

/** The responder: `<service>.ping` echoes its data; any other route is refused. */
function responder(service: string, report: DemoReport) {
  return {
    requestResponse(
      payload: Payload,
      stream: OnTerminalSubscriber & OnNextSubscriber & OnExtensionSubscriber,
    ) {
      const route = payload.metadata ? routeOf(payload.metadata) : null;
      if (route === `${service}.ping`) {
        report.device!.calls += 1;
        render(report);
        stream.onNext({ data: payload.data ?? Buffer.alloc(0) }, true);
      } else {
        stream.onError(new Error(`device ${service} has no route '${route}'`));
      }
      return { cancel() {}, onExtension() {} };
    },
  };
}

async function connectTo(url: string, config: DemoConfig, service: string, report: DemoReport): Promise<RSocket> {
  const connector = new RSocketConnector({
    setup: {
      dataMimeType: DATA_MIME,
      metadataMimeType: COMPOSITE_METADATA_MIME,
      keepAlive: KEEPALIVE_MS,
      lifetime: LIFETIME_MS,
      payload: { data: null, metadata: deviceSetupMetadata(service, `browser-${config.deviceId}`, config.token) },
    },
    transport: new WebsocketClientTransport({ url }),
    responder: responder(service, report),
  });
  return connector.connect().catch((error: unknown) => {
    throw error ?? new Error(`cannot open WebSocket ${url}`);
  });
}

/** Stay connected to some node of `config.nodes` for as long as the page lives. */
export async function runDevice(config: DemoConfig, report: DemoReport): Promise<void> {
  const service = `device.${config.deviceId}`;
  const nodes = config.nodes.length ? config.nodes : [config.url];
  report.device = { service, node: null, connects: 0, calls: 0, attempts: 0 };
  let cursor = 0;
  let attempt = 0;
  for (;;) {
    const url = nodes[cursor % nodes.length];
    cursor += 1;
    report.device.attempts += 1;
    let rsocket: RSocket;
    try {
      rsocket = await connectTo(url, config, service, report);
    } catch (error) {
      report.error = describeError(error);
      render(report);
      attempt += 1;
      await sleep(backoff(attempt));
      continue;
    }
    attempt = 0;
    const closed = new Promise<void>((resolve) => rsocket.onClose(() => resolve()));
    report.device.node = url;
    report.device.connects += 1;
    report.error = null;
    report.state = "running";
    render(report);
    await closed;
    report.device.node = null;
    render(report);
    await sleep(backoff(0));
  }
}
