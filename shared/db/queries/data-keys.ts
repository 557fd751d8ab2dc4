/** The wrapped data keys of envelope encryption (table `data_keys`; shared/hsm/envelope.ts). */
import type postgres from 'postgres';

type Sql = postgres.Sql | postgres.TransactionSql;

export interface DataKeyRow {
  id: number;
  kekLabel: string;
  wrappedKey: Buffer;
}

const row = (r: postgres.Row): DataKeyRow => ({
  id: Number(r['id']),
  kekLabel: r['kek_label'] as string,
  wrappedKey: r['wrapped_key'] as Buffer,
});

/** The id the next data key will take (its wrapping is bound to it before the row exists). */
export async function nextDataKeyId(sql: Sql): Promise<number> {
  const [r] = await sql`select nextval(pg_get_serial_sequence('data_keys', 'id'))::int as id`;
  return Number(r?.['id']);
}

export async function insertDataKey(sql: Sql, key: DataKeyRow): Promise<void> {
  await sql`insert into data_keys (id, kek_label, wrapped_key) overriding system value
    values (${key.id}, ${key.kekLabel}, ${key.wrappedKey})`;
}

export async function dataKeyById(sql: Sql, id: number): Promise<DataKeyRow | null> {
  const [r] = await sql`select id, kek_label, wrapped_key from data_keys where id = ${id}`;
  return r === undefined ? null : row(r);
}

/** The data key new values are sealed with: the newest. */
export async function newestDataKey(sql: Sql): Promise<DataKeyRow | null> {
  const [r] = await sql`select id, kek_label, wrapped_key from data_keys order by id desc limit 1`;
  return r === undefined ? null : row(r);
}

/** Every data key, locked for update (rotation). */
export async function dataKeysForUpdate(sql: postgres.TransactionSql): Promise<DataKeyRow[]> {
  return (await sql`select id, kek_label, wrapped_key from data_keys order by id for update`).map(row);
}

export async function rewrapDataKey(
  sql: Sql,
  id: number,
  kekLabel: string,
  wrappedKey: Buffer,
): Promise<void> {
  await sql`update data_keys set kek_label = ${kekLabel}, wrapped_key = ${wrappedKey}, rewrapped_at = now()
    where id = ${id}`;
}

/** How many data keys each key-encryption key wraps. */
export async function dataKeysByKek(sql: Sql): Promise<Map<string, number>> {
  const rows =
    await sql`select kek_label, count(*)::int as n from data_keys group by kek_label order by kek_label`;
  return new Map(rows.map((r) => [r['kek_label'] as string, Number(r['n'])]));
}
