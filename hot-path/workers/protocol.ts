/**
 * The messages between the primary of a multi-worker hot path and its workers (node:cluster IPC). The
 * workers do not listen on HOT_PATH_METRICS_PORT: the primary does, and asks each worker for its
 * /metrics, /healthz or /readyz over this channel.
 */

/** The internal routes a worker answers over IPC. */
export const INTERNAL_PATHS = ['/metrics', '/healthz', '/readyz'] as const;
export type InternalPath = (typeof INTERNAL_PATHS)[number];

/** Primary → worker: answer `path` as your internal listener would. */
export interface InternalRequest {
  credana: 'internal-request';
  id: number;
  path: InternalPath;
}

/** Worker → primary: the answer, status and body. */
export interface InternalReply {
  credana: 'internal-reply';
  id: number;
  status: number;
  body: string;
}

export function isInternalRequest(message: unknown): message is InternalRequest {
  const m = message as Partial<InternalRequest> | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    m.credana === 'internal-request' &&
    typeof m.id === 'number' &&
    INTERNAL_PATHS.includes(m.path as InternalPath)
  );
}

export function isInternalReply(message: unknown): message is InternalReply {
  const m = message as Partial<InternalReply> | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    m.credana === 'internal-reply' &&
    typeof m.id === 'number' &&
    typeof m.status === 'number' &&
    typeof m.body === 'string'
  );
}

/**
 * In a worker: answers the primary's internal requests with `app` (the worker's internal app, never
 * bound to a port of its own).
 */
export function answerInternalRequests(app: { request(path: string): Response | Promise<Response> }): void {
  process.on('message', (message: unknown) => {
    if (!isInternalRequest(message)) return;
    void (async () => {
      let reply: InternalReply;
      try {
        const response = await app.request(message.path);
        reply = {
          credana: 'internal-reply',
          id: message.id,
          status: response.status,
          body: await response.text(),
        };
      } catch {
        reply = { credana: 'internal-reply', id: message.id, status: 500, body: '{"error":"internal"}' };
      }
      // The primary may be gone (it is shutting down): nothing to answer then.
      if (process.connected) process.send?.(reply);
    })();
  });
}
