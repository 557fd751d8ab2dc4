/**
 * Pub/sub for the global channels every hot-path process listens to (prices, asset parameters, card
 * pushes: `channels()` in keys.ts). On one Redis: PUBLISH / SUBSCRIBE. On a Redis Cluster: sharded
 * pub/sub, SPUBLISH / SSUBSCRIBE (docs/redis-layout.md, "Redis Cluster" says why): the channels share
 * one hash tag, so they live in one slot, and each process holds one subscriber connection, to the
 * primary that owns that slot; on a failover the cluster client moves it to the new primary.
 *
 * Either way a message published while a subscriber was away is lost to it: `onResubscribed` runs
 * once the subscription is in force again (after a reconnect, a failover, a resharding), and the
 * subscriber then re-reads the stored state the messages announce (the market re-reads its hashes).
 */
import { isCluster, type Redis } from './client.ts';

/** Publishes `message` to every subscriber of `channel`, on one Redis or a cluster. */
export async function publishToAll(redis: Redis, channel: string, message: string): Promise<void> {
  if (isCluster(redis)) await redis.spublish(channel, message);
  else await redis.publish(channel, message);
}

export interface SubscribeHandlers {
  onMessage(channel: string, message: string): void;
  /** The subscription is in force again after it may have missed messages. */
  onResubscribed(): void;
}

/**
 * Subscribes to `names` (on a cluster, all in one slot; `channels()` makes them so). A cluster client
 * must be created with `shardedSubscriber: true`. Resolves once the subscription is in force.
 */
export async function subscribeToAll(
  subscriber: Redis,
  names: readonly string[],
  handlers: SubscribeHandlers,
): Promise<void> {
  if (!isCluster(subscriber)) {
    subscriber.on('message', (channel: string, message: string) => handlers.onMessage(channel, message));
    // After a reconnect ioredis subscribes again before it reports `ready`.
    subscriber.on('ready', () => handlers.onResubscribed());
    await subscriber.subscribe(...names);
    return;
  }
  if (subscriber.options.shardedSubscribers !== true) {
    throw new Error('subscribeToAll: the cluster client needs shardedSubscriber: true');
  }
  subscriber.on('smessage', (channel: string, message: string) => handlers.onMessage(channel, message));
  // The cluster client emits `subscribersReady` after it (re)created its sharded subscribers for a new
  // topology and sent their SSUBSCRIBE again, without waiting for the answer. Subscribing once more
  // through it and awaiting the reply (the same connection answers in order) tells when the
  // subscription is in force; SSUBSCRIBE to a channel already subscribed changes nothing.
  subscriber.on('subscribersReady', () => {
    subscriber
      .ssubscribe(...names)
      .then(() => handlers.onResubscribed())
      .catch(() => {
        // The subscriber went away again; the next `subscribersReady` tries again.
      });
  });
  await subscriber.ssubscribe(...names);
}
