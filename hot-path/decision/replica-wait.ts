/**
 * WAIT for replicas, shared by the approvals of one moment (REDIS_WAIT_REPLICAS; docs/hot-path.md
 * "Replication and failover").
 *
 * `WAIT` blocks the connection it is sent on: every command queued behind it waits too. Measured
 * (`npm run bench:wait`): one WAIT per decision, pipelined with its script on the hot path's one shared
 * connection, serialised every decision behind the replica's acknowledgement; and with the replica
 * away, WAITs queued one behind another each held the connection for the whole timeout, until the
 * process's commands timed out and it decided from Postgres. So:
 *   - a WAIT is sent after the replies it covers, on the connection that carried them (WAIT counts the
 *     acknowledgements of everything the connection wrote before it), and covers every approval whose
 *     reply had arrived when it was sent;
 *   - per connection, at most one WAIT is outstanding: approvals arriving meanwhile share the next one,
 *     sent when it returns. With the replica away a command waits at most one timeout behind it.
 *
 * Routing: the WAIT goes in a pipeline with an EXISTS of a key of the decision's shard, so on a Redis
 * Cluster ioredis sends it to the node that owns that shard's slot — the node that ran the script.
 * On a single Redis every shard shares the one connection, hence one group; on a Cluster the group is
 * the shard (grouping by node would need the slot → node map: see the docs).
 */
import type { Redis } from '../../shared/redis/client.ts';

export interface ReplicaWaiter {
  /**
   * How many replicas acknowledged every write this connection made before the WAIT, asked after the
   * reply of a write on `shardKey`'s node was received. 0 when the WAIT fails.
   */
  acknowledged(shardKey: string): Promise<number>;
}

interface Group {
  inFlight: boolean;
  next: { promise: Promise<number>; resolve: (n: number) => void; routeKey: string } | null;
}

export function createReplicaWaiter(redis: Redis, replicas: number, timeoutMs: number): ReplicaWaiter {
  const groups = new Map<string, Group>();

  function send(group: Group): void {
    const batch = group.next;
    if (batch === null) return;
    group.next = null;
    group.inFlight = true;
    const done = (acked: number) => {
      group.inFlight = false;
      batch.resolve(acked);
      // Approvals that came back while this WAIT was out: theirs is sent now (after their replies).
      if (group.next !== null) send(group);
    };
    redis
      .pipeline()
      .exists(batch.routeKey)
      .call('WAIT', replicas, timeoutMs)
      .exec()
      .then(
        (results) => {
          const [error, acked] = results?.[1] ?? [new Error('discarded'), 0];
          done(error === null ? Number(acked) : 0);
        },
        () => done(0),
      );
  }

  return {
    acknowledged(shardKey) {
      const groupKey = redis.isCluster ? shardKey : '';
      let group = groups.get(groupKey);
      if (group === undefined) {
        group = { inFlight: false, next: null };
        groups.set(groupKey, group);
      }
      if (group.next === null) {
        let resolve: (n: number) => void = () => {};
        const promise = new Promise<number>((r) => {
          resolve = r;
        });
        group.next = { promise, resolve, routeKey: shardKey };
        // Gathers the approvals of this turn of the event loop; if a WAIT is out, its return sends it.
        const g = group;
        if (!g.inFlight) setImmediate(() => send(g));
      }
      return group.next.promise;
    },
  };
}
