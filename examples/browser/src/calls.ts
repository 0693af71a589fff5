/**
 * The three interaction models the page uses, as promises over rsocket-js's callback API.
 * Payload data is UTF-8 text; every request carries its route in composite metadata.
 * These functions never swallow an error: an ERROR frame rejects with an `RSocketError`.
 */
import type { Payload, Requestable, RSocket } from "rsocket-core";
import { routeMetadata } from "./metadata";

/** What a request-stream delivered and how it was paced. */
export interface StreamOutcome {
  /** Items in arrival order. */
  readonly items: string[];
  /** Every credit grant sent, the initial request-n first, then each REQUEST_N frame. */
  readonly requests: number[];
}

/** An error as the page shows it: the RSocket error code when the peer sent one. */
export interface CallError {
  readonly code: number | null;
  readonly message: string;
}

function textPayload(route: string, text: string): Payload {
  return { data: Buffer.from(text, "utf8"), metadata: routeMetadata(route) };
}

function payloadText(payload: Payload): string {
  return payload.data ? payload.data.toString("utf8") : "";
}

function ignoreExtension(): void {
  // The broker and our providers send no EXT frames; rsocket-js demands the callback anyway.
}

/**
 * Reads the code by duck typing: rsocket-core ships ES5 code, where `class RSocketError extends
 * Error` yields plain `Error` objects carrying a `code`, so `instanceof RSocketError` is false.
 */
export function describeError(error: unknown): CallError {
  if (error instanceof Error) {
    const code: unknown = (error as Error & { code?: unknown }).code;
    return { code: typeof code === "number" ? code : null, message: error.message };
  }
  return { code: null, message: String(error) };
}

/** REQUEST_RESPONSE: resolves with the reply text ("" when the provider completes empty). */
export function requestResponse(rsocket: RSocket, route: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    rsocket.requestResponse(textPayload(route, text), {
      onNext: (payload) => resolve(payloadText(payload)),
      onComplete: () => resolve(""),
      onError: reject,
      onExtension: ignoreExtension,
    });
  });
}

/**
 * REQUEST_STREAM with flow control: asks for `batch` items up front and for `batch` more only
 * after the previous grant is used up, so the provider never has more than `batch` in flight.
 */
export function requestStream(
  rsocket: RSocket,
  route: string,
  text: string,
  batch: number,
): Promise<StreamOutcome> {
  return new Promise((resolve, reject) => {
    const outcome: StreamOutcome = { items: [], requests: [batch] };
    let credits = batch;
    // Callbacks run only once response frames arrive, after `subscription` is assigned.
    const subscription: Requestable = rsocket.requestStream(textPayload(route, text), batch, {
      onNext: (payload, isComplete) => {
        outcome.items.push(payloadText(payload));
        credits -= 1;
        if (isComplete) {
          resolve(outcome);
        } else if (credits === 0) {
          credits = batch;
          outcome.requests.push(batch);
          subscription.request(batch);
        }
      },
      onComplete: () => resolve(outcome),
      onError: reject,
      onExtension: ignoreExtension,
    });
  });
}

/** REQUEST_FNF: resolves once the frame is handed to the WebSocket; no reply exists. */
export function fireAndForget(rsocket: RSocket, route: string, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    rsocket.fireAndForget(textPayload(route, text), { onComplete: resolve, onError: reject });
  });
}
