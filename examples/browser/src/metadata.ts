/**
 * Composite metadata the broker reads: the routing tag on every request, the optional bearer
 * token in SETUP. The broker parses only metadata, never data, so these are the only bytes the
 * page must get exactly right. Well-known MIME types go out in their one-byte compressed form,
 * as every rsocket-js client sends them.
 */
import {
  WellKnownMimeType,
  decodeCompositeMetadata,
  decodeRoutes,
  encodeBearerAuthMetadata,
  encodeCompositeMetadata,
  encodeRoute,
} from "rsocket-composite-metadata";

/** The broker's registration entry (a provider lists its services in SETUP). */
export const REGISTER_MIME = "message/x.rsbroker.register.v0";
const ROUTING_MIME = WellKnownMimeType.MESSAGE_RSOCKET_ROUTING.string;

export const COMPOSITE_METADATA_MIME = WellKnownMimeType.MESSAGE_RSOCKET_COMPOSITE_METADATA.string;
export const DATA_MIME = "text/plain";

/** SETUP metadata: the bearer token when there is one, else an empty composite (anonymous). */
export function setupMetadata(token: string | null): Buffer {
  const entries: Array<[WellKnownMimeType, Buffer]> = [];
  if (token !== null) {
    entries.push([WellKnownMimeType.MESSAGE_RSOCKET_AUTHENTICATION, encodeBearerAuthMetadata(token)]);
  }
  return encodeCompositeMetadata(entries);
}

/** Request metadata routing to `service.method`; the broker picks the provider by `service`. */
export function routeMetadata(route: string): Buffer {
  return encodeCompositeMetadata([[WellKnownMimeType.MESSAGE_RSOCKET_ROUTING, encodeRoute(route)]]);
}

/** SETUP metadata of a device: its registration (one service, its own) and the token, if any. */
export function deviceSetupMetadata(service: string, instance: string, token: string | null): Buffer {
  const entries: Array<[WellKnownMimeType | string, Buffer]> = [
    [REGISTER_MIME, Buffer.from(JSON.stringify({ services: [service], instance }), "utf8")],
  ];
  if (token !== null) {
    entries.push([WellKnownMimeType.MESSAGE_RSOCKET_AUTHENTICATION, encodeBearerAuthMetadata(token)]);
  }
  return encodeCompositeMetadata(entries);
}

/** The first routing tag of a request's composite metadata, or null. */
export function routeOf(metadata: Buffer): string | null {
  for (const entry of decodeCompositeMetadata(metadata)) {
    if (entry.mimeType === ROUTING_MIME) {
      for (const route of decodeRoutes(entry.content)) {
        return route;
      }
    }
  }
  return null;
}
