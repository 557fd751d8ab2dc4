/**
 * Typed supabase-js clients. The web app uses `createUserClient` with the project's anon (publishable)
 * key: every query then runs as the signed-in user under RLS. Server code that must act for the
 * program (back office, never the hot path) uses `createServiceClient`, which bypasses RLS: keep that
 * key on servers only.
 *
 * @example
 * const supabase = createUserClient({ url: config.SUPABASE_URL, anonKey });
 * await supabase.from('card_controls').update({ frozen: true }).eq('user_id', userId);
 */
import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import type { Database } from './types/database.ts';

export type CredanaSupabaseClient = SupabaseClient<Database>;

export interface UserClientOptions {
  url: string;
  /** The project's anon / publishable key (public by design). */
  anonKey: string;
  /** For tests and non-browser runtimes. */
  fetch?: typeof fetch;
}

export function createUserClient(options: UserClientOptions): CredanaSupabaseClient {
  return createClient<Database>(options.url, options.anonKey, {
    ...(options.fetch === undefined ? {} : { global: { fetch: options.fetch } }),
    auth: { persistSession: true, autoRefreshToken: true },
  });
}

export interface ServiceClientOptions {
  url: string;
  /** SUPABASE_SERVICE_ROLE_KEY: bypasses RLS. Server-side only. */
  serviceRoleKey: string;
  fetch?: typeof fetch;
}

export function createServiceClient(options: ServiceClientOptions): CredanaSupabaseClient {
  return createClient<Database>(options.url, options.serviceRoleKey, {
    ...(options.fetch === undefined ? {} : { global: { fetch: options.fetch } }),
    // A server holds no user session: never persist or refresh one.
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}
