/**
 * WAIT for replicas, shared by the approvals of one moment (REDIS_WAIT_REPLICAS; docs/hot-path.md
 * "Replication and failover").
 *
 * `WAIT` blocks the connection it is sent on: every command queued behind it waits too. One WAIT per
 * decision on the hot path's one shared connection therefore serialised every decision behind the
 * replica's acknowledgement (measured: `npm run bench:wait`, first design) and, with the replica away,
 * held every command for the full timeout each, until the process's commands timed out and it fell back
 * to Postgres. So it is asked once for all the approvals whose replies came back in the same turn of
 * the event loop, per shard: each WAIT is sent after the replies it covers, on the connection that
 * carried them (WAIT counts acknowledgements of the connection's own writes up to it).
 *
 * Routing: the WAIT goes in a pipeline with an EXISTS of a key of the decision's shard, so on a Redis
 * Cluster ioredis sends it to the node that owns that shard's slot — the node that ran the script.
 */
import type { Redis } from '../../shared/redis/client.ts';

export interface ReplicaWaiter {
  /**
   * How many replicas acknowledged every write this connection made up to now, asked after the reply
   * of a write on `shardKey`'s node was received. 0 when the WAIT fails.
   */
  acknowledged(shardKey: string): Promise<number>;
}

export function createReplicaWaiter(redis: Redis, replicas: number, timeoutMs: number): ReplicaWaiter {
  // Per shard key: the WAIT about to be sent (joined until it is sent at the end of this turn).
  const pending = new Map<string, Promise<number>>();
  return {
    acknowledged(shardKey) {
      let wait = pending.get(shardKey);
      if (wait === undefined) {
        wait = new Promise<number>((resolve) => {
          setImmediate(() => {
            pending.delete(shardKey);
            redis
              .pipeline()
              .exists(shardKey)
              .call('WAIT', replicas, timeoutMs)
              .exec()
              .then(
                (results) => {
                  const [error, acked] = results?.[1] ?? [new Error('discarded'), 0];
                  resolve(error === null ? Number(acked) : 0);
                },
                () => resolve(0),
              );
          });
        });
        pending.set(shardKey, wait);
      }
      return wait;
    },
  };
}
