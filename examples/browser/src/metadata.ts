/**
 * Composite metadata the broker reads: the routing tag on every request, the optional bearer
 * token in SETUP. The broker parses only metadata, never data, so these are the only bytes the
 * page must get exactly right. Well-known MIME types go out in their one-byte compressed form,
 * as every rsocket-js client sends them.
 */
import {
  WellKnownMimeType,
  encodeBearerAuthMetadata,
  encodeCompositeMetadata,
  encodeRoute,
} from "rsocket-composite-metadata";

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
