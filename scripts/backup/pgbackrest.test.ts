// Proves the pgBackRest configuration is generated from our config as docs/operations.md says (zstd, 30-day time retention, the S3 repository and its encryption in production, secrets only in the 0600 file), that the BACKUP_* settings refuse an incomplete S3 setup in one line without echoing a secret, and that a recovery target must carry its UTC offset — pure functions, no server.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../shared/config.ts';
import {
  archiveCommand,
  backupSettingsFrom,
  recoveryTarget,
  renderConfig,
  serverSettings,
} from './pgbackrest.ts';

const CLUSTER = {
  dataDir: '/var/lib/postgresql/15/main',
  socketDir: '/var/run/postgresql',
  port: 5432,
  user: 'postgres',
};
// Built at run time: a literal would be a public secret (shared/config.test.ts scans for them).
const SECRET = ['s3', 'secret', 'value', 'for', 'this', 'test'].join('-');
const PASS = 'p'.repeat(40);

const s3Env = {
  NODE_ENV: 'production',
  STRIPE_WEBHOOK_SECRETS: `whsec_${'x'.repeat(32)}`,
  BACKUP_REPO_TYPE: 's3',
  BACKUP_S3_BUCKET: 'credana-backups',
  BACKUP_S3_ENDPOINT: 's3.eu-central-1.amazonaws.com',
  BACKUP_S3_REGION: 'eu-central-1',
  BACKUP_CIPHER_PASS: PASS,
};

describe('renderConfig', () => {
  it('writes a posix repository with zstd and retention by time (30 days by default)', () => {
    const settings = backupSettingsFrom(loadConfig({ NODE_ENV: 'test', BACKUP_DIR: '/srv/backup' }));
    const text = renderConfig(settings, CLUSTER);
    expect(text).toContain('repo1-type=posix\nrepo1-path=/srv/backup/repo\n');
    expect(text).toContain('repo1-retention-full-type=time\nrepo1-retention-full=30\n');
    expect(text).toContain('compress-type=zst\n');
    expect(text).toContain('lock-path=/srv/backup/lock\nlog-path=/srv/backup/log\n');
    expect(text).toContain(
      '[credana]\npg1-path=/var/lib/postgresql/15/main\npg1-port=5432\npg1-socket-path=/var/run/postgresql\n',
    );
    expect(text).not.toContain('cipher');
    expect(serverSettings(settings)).toMatchObject({
      archive_mode: 'on',
      wal_compression: 'zstd',
      archive_timeout: '60s',
      archive_command:
        '/usr/bin/pgbackrest --config=/srv/backup/pgbackrest.conf --stanza=credana archive-push %p',
    });
    expect(archiveCommand(settings)).toContain('archive-push %p');
  });

  it('writes an encrypted S3 repository that takes its key from the IAM role by default', () => {
    const text = renderConfig(backupSettingsFrom(loadConfig(s3Env)), null);
    expect(text).toContain('repo1-type=s3\nrepo1-path=/credana\n');
    expect(text).toContain('repo1-s3-bucket=credana-backups\n');
    expect(text).toContain('repo1-s3-key-type=auto\n');
    expect(text).not.toContain('repo1-s3-key=');
    expect(text).toContain(`repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=${PASS}\n`);
    expect(text).toMatch(/\[credana\]\n$/);
  });

  it('puts shared S3 keys in the file only (pgBackRest has no other way for archive-push)', () => {
    const config = loadConfig({
      ...s3Env,
      BACKUP_S3_KEY_TYPE: 'shared',
      BACKUP_S3_KEY: 'AKIAEXAMPLEKEYID',
      BACKUP_S3_KEY_SECRET: SECRET,
    });
    expect(renderConfig(backupSettingsFrom(config), null)).toContain(`repo1-s3-key-secret=${SECRET}\n`);
  });
});

describe('BACKUP_* settings', () => {
  const refusal = (env: Record<string, string>) => {
    try {
      loadConfig(env);
    } catch (error) {
      if (error instanceof ConfigError) return error;
    }
    throw new Error('accepted');
  };

  it('refuses an S3 repository without its bucket, or unencrypted in production', () => {
    const { BACKUP_S3_BUCKET: _, ...noBucket } = s3Env;
    expect(refusal(noBucket).message).toBe(
      'config: BACKUP_S3_BUCKET is invalid: is required with BACKUP_REPO_TYPE=s3',
    );
    const { BACKUP_CIPHER_PASS: __, ...noPass } = s3Env;
    expect(refusal(noPass).message).toMatch(
      /^config: BACKUP_CIPHER_PASS is invalid: is required with BACKUP_REPO_TYPE=s3 in production/,
    );
  });

  it('never echoes the S3 secret or the cipher pass', () => {
    const error = refusal({ ...s3Env, BACKUP_S3_KEY_TYPE: 'shared', BACKUP_S3_KEY_SECRET: SECRET });
    expect(error.variable).toBe('BACKUP_S3_KEY');
    expect(error.message).not.toContain(SECRET);
    const short = refusal({ ...s3Env, BACKUP_CIPHER_PASS: 'too-short-secret-abc' });
    expect(short.variable).toBe('BACKUP_CIPHER_PASS');
    expect(short.message).not.toContain('too-short-secret-abc');
  });
});

describe('recoveryTarget', () => {
  it('keeps microseconds and the offset, as Postgres reads them', () => {
    expect(recoveryTarget('2026-12-07T05:53:34.080502Z')).toBe('2026-12-07 05:53:34.080502+00');
    expect(recoveryTarget('2026-12-07 06:53:34+01:00')).toBe('2026-12-07 06:53:34+01:00');
    expect(recoveryTarget('2026-12-07 06:53:34-0500')).toBe('2026-12-07 06:53:34-0500');
  });

  it('refuses a time without offset (whose clock?), a date alone and nonsense', () => {
    for (const text of [
      '2026-12-07 10:00:00',
      '2026-12-07',
      'yesterday',
      '2026-13-45T99:00:00Z',
      "'; drop",
    ]) {
      expect(recoveryTarget(text)).toBeNull();
    }
  });
});
