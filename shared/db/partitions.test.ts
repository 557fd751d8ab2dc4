// Proves the card_events partition job on a real PostgreSQL clone of the migrated template: it creates the right UTC months, is idempotent and safe to run concurrently, keeps going but fails loudly when the default partition holds rows, and the `db:partitions` script reports and exits accordingly (run as a real child process).
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloneTemplateDatabase, dropDatabase } from '../../test/support/db.ts';
import { runScript, type ScriptResult } from '../../test/support/processes.ts';
import {
  addMonths,
  DefaultPartitionNotEmptyError,
  ensureCardEventPartitions,
  monthStartUtc,
  PARTITION_MONTHS_AHEAD_DEFAULT,
} from './partitions.ts';

let url = '';
let sql: postgres.Sql;

beforeAll(async () => {
  url = await cloneTemplateDatabase();
  sql = postgres(url, { max: 4, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  if (url !== '') await dropDatabase(url);
});

async function partitionsOf(year: number): Promise<Map<string, string>> {
  const rows = await sql<{ name: string; bound: string }[]>`
    select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'card_events'::regclass and c.relname like ${`card_events_y${year}m%`}`;
  return new Map(rows.map((row) => [row.name, row.bound]));
}

async function expectRejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('month arithmetic', () => {
  it('takes the month in UTC, whatever offset the instant was written with', () => {
    expect(monthStartUtc(new Date('2026-01-31T23:59:59.999Z'))).toBe('2026-01-01');
    expect(monthStartUtc(new Date('2026-02-01T00:30:00+01:00'))).toBe('2026-01-01');
    expect(monthStartUtc(new Date('2026-02-01T00:00:00Z'))).toBe('2026-02-01');
    expect(() => monthStartUtc(new Date('not a date'))).toThrow(RangeError);
  });

  it('adds months across year ends', () => {
    expect(addMonths('2026-11-01', 3)).toBe('2027-02-01');
    expect(addMonths('2026-01-01', -1)).toBe('2025-12-01');
    expect(addMonths('2026-12-01', 0)).toBe('2026-12-01');
  });
});

describe('ensureCardEventPartitions', () => {
  it('creates the current UTC month and the months ahead, once', async () => {
    const now = new Date('2031-01-15T10:00:00Z');
    const first = await ensureCardEventPartitions(sql, { now, monthsAhead: 3 });
    expect(first).toEqual({
      fromMonth: '2031-01-01',
      created: [
        'card_events_y2031m01',
        'card_events_y2031m02',
        'card_events_y2031m03',
        'card_events_y2031m04',
      ],
      blockedMonths: [],
      defaultRows: 0n,
    });
    const partitions = await partitionsOf(2031);
    expect(partitions.get('card_events_y2031m04')).toBe(
      "FOR VALUES FROM ('2031-04-01 00:00:00+00') TO ('2031-05-01 00:00:00+00')",
    );
    expect(partitions.size).toBe(4);
    const again = await ensureCardEventPartitions(sql, { now, monthsAhead: 3 });
    expect(again.created).toEqual([]);
    const further = await ensureCardEventPartitions(sql, { now, monthsAhead: 4 });
    expect(further.created).toEqual(['card_events_y2031m05']);
  });

  it('creates only the current month with monthsAhead 0, and refuses bad counts before touching anything', async () => {
    const now = new Date('2036-07-04T00:00:00Z');
    for (const monthsAhead of [-1, 1.5, 120, Number.NaN]) {
      expect(await expectRejection(ensureCardEventPartitions(sql, { now, monthsAhead }))).toBeInstanceOf(
        RangeError,
      );
    }
    expect((await partitionsOf(2036)).size).toBe(0);
    expect((await ensureCardEventPartitions(sql, { now, monthsAhead: 0 })).created).toEqual([
      'card_events_y2036m07',
    ]);
  });

  it('is safe to run concurrently: every month is made exactly once and no run fails', async () => {
    const clients = Array.from({ length: 4 }, () => postgres(url, { max: 1, onnotice: () => {} }));
    try {
      const now = new Date('2032-06-01T00:00:00Z');
      const results = await Promise.all(
        clients.map((client) => ensureCardEventPartitions(client, { now, monthsAhead: 6 })),
      );
      const created = results.flatMap((result) => result.created).sort();
      expect(created).toEqual([
        'card_events_y2032m06',
        'card_events_y2032m07',
        'card_events_y2032m08',
        'card_events_y2032m09',
        'card_events_y2032m10',
        'card_events_y2032m11',
        'card_events_y2032m12',
      ]);
    } finally {
      await Promise.all(clients.map((client) => client.end({ timeout: 5 })));
    }
  });

  it('cuts months at UTC midnight whatever the session time zone', async () => {
    const kiribati = postgres(url, {
      max: 1,
      onnotice: () => {},
      connection: { TimeZone: 'Pacific/Kiritimati' },
    });
    try {
      await ensureCardEventPartitions(kiribati, { now: new Date('2033-02-10T00:00:00Z'), monthsAhead: 1 });
    } finally {
      await kiribati.end({ timeout: 5 });
    }
    expect((await partitionsOf(2033)).get('card_events_y2033m03')).toBe(
      "FOR VALUES FROM ('2033-03-01 00:00:00+00') TO ('2033-04-01 00:00:00+00')",
    );
    // 23:00 UTC on 28 February is already March in UTC+14, but belongs to February.
    const [row] = await sql<{ partition: string }[]>`
      insert into card_events (id, type, payload, created_at) values ('evt_tz', 't', '{}', '2033-02-28T23:00:00Z')
      returning tableoid::regclass::text as partition`;
    expect(row?.partition).toBe('card_events_y2033m02');
  });

  it('creates the other months but fails loudly while the default partition holds rows', async () => {
    const [stray] = await sql<{ partition: string }[]>`
      insert into card_events (id, type, payload, created_at) values ('evt_stray', 't', '{}', '2040-06-15T00:00:00Z')
      returning tableoid::regclass::text as partition`;
    expect(stray?.partition).toBe('card_events_default');

    const error = await expectRejection(
      ensureCardEventPartitions(sql, { now: new Date('2040-05-10T00:00:00Z'), monthsAhead: 2 }),
    );
    expect(error).toBeInstanceOf(DefaultPartitionNotEmptyError);
    const { result, message } = error as DefaultPartitionNotEmptyError;
    expect(result).toEqual({
      fromMonth: '2040-05-01',
      created: ['card_events_y2040m05', 'card_events_y2040m07'],
      blockedMonths: ['2040-06-01'],
      defaultRows: 1n,
    });
    expect(message).toMatch(
      /card_events_default holds 1 row\(s\) \(no partition could be made for 2040-06-01\)/,
    );

    // A stray row outside the months asked for blocks nothing, but is still reported.
    const elsewhere = await expectRejection(
      ensureCardEventPartitions(sql, { now: new Date('2041-01-01T00:00:00Z'), monthsAhead: 0 }),
    );
    expect((elsewhere as DefaultPartitionNotEmptyError).result).toMatchObject({
      created: ['card_events_y2041m01'],
      blockedMonths: [],
      defaultRows: 1n,
    });

    // Once the row is moved out, the blocked month is made and the job is quiet again.
    await sql`delete from card_events_default`;
    const repaired = await ensureCardEventPartitions(sql, {
      now: new Date('2040-05-10T00:00:00Z'),
      monthsAhead: 2,
    });
    expect(repaired.created).toEqual(['card_events_y2040m06']);
  });
});

/** Runs `scripts/db-partitions.ts` the way `npm run db:partitions` does, with exactly `env`. */
function runJob(args: string[], env: Record<string, string>): Promise<ScriptResult> {
  // A deployed job: without NODE_ENV it would run as production and refuse the public default secret.
  return runScript('scripts/db-partitions.ts', args, { NODE_ENV: 'test', ...env });
}

// Each child starts Node and tsx (a few seconds on a busy two-core machine).
const CHILD_TIMEOUT_MS = 90_000;

describe('npm run db:partitions', () => {
  const partitionName = (month: string) => `card_events_y${month.slice(0, 4)}m${month.slice(5, 7)}`;

  it(
    'prints what it created, then nothing on the next run, and exits 0',
    async () => {
      // The migration covered three months ahead; asking for five makes the fourth and fifth.
      const thisMonth = monthStartUtc(new Date());
      const first = await runJob(['--months-ahead=5'], { DATABASE_URL: url });
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      expect(first.stdout).toBe(
        `db:partitions: from ${thisMonth} for 6 month(s), created: ` +
          `${partitionName(addMonths(thisMonth, 4))}, ${partitionName(addMonths(thisMonth, 5))}\n`,
      );
      const second = await runJob([], { DATABASE_URL: url });
      expect(second.code).toBe(0);
      expect(second.stdout).toBe(
        `db:partitions: from ${thisMonth} for ${PARTITION_MONTHS_AHEAD_DEFAULT + 1} month(s), created: nothing (all present)\n`,
      );
    },
    CHILD_TIMEOUT_MS,
  );

  it(
    'exits 64 on a bad command line, before connecting',
    async () => {
      const cases = [['--months-ahead=abc'], ['--months-ahead=120'], ['--unknown']];
      const results = await Promise.all(
        cases.map((args) => runJob(args, { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/never' })),
      );
      for (const [i, result] of results.entries()) {
        expect(result.code, cases[i]?.join(' ')).toBe(64);
        expect(result.stderr).toMatch(/^db:partitions: [^\n]+\n$/);
      }
    },
    CHILD_TIMEOUT_MS,
  );

  it(
    'exits 1 and says so on stderr while the default partition holds rows',
    async () => {
      await sql`insert into card_events (id, type, payload, created_at) values ('evt_far', 't', '{}', '2045-01-01T00:00:00Z')`;
      try {
        const result = await runJob(['--months-ahead=0'], { DATABASE_URL: url });
        expect(result.code).toBe(1);
        expect(result.stdout).toMatch(/^db:partitions: from \d{4}-\d{2}-01 for 1 month\(s\), created: /);
        expect(result.stderr).toMatch(/^db:partitions: card_events_default holds 1 row\(s\)/);
      } finally {
        await sql`delete from card_events_default`;
      }
    },
    CHILD_TIMEOUT_MS,
  );
});
