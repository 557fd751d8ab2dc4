/**
 * A real SoftHSM2 token for one test file: its own token directory and SOFTHSM2_CONF in a temporary
 * folder, initialised with `softhsm2-util` (Debian `softhsm2`; missing, the test fails, it does not
 * skip). The library reads SOFTHSM2_CONF when it is first initialised in a process, so a test file sets
 * it for its own worker process (`useInThisProcess`) before opening the token, and passes `env` to the
 * services it spawns.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsmToken {
  dir: string;
  modulePath: string;
  tokenLabel: string;
  pin: string;
  /** A file holding the PIN (mode 600), for PKCS11_PIN_FILE. */
  pinFile: string;
  /** SOFTHSM2_CONF for child processes. */
  env: { SOFTHSM2_CONF: string };
  /** The config variables naming this token (PIN by file). */
  configEnv: Record<string, string>;
  /** Points this process's SoftHSM at the token (before the first C_Initialize of the process). */
  useInThisProcess(): void;
  destroy(): void;
}

/** Creates and initialises a token labelled `tokenLabel` with a random user PIN. */
export function createSoftHsmToken(tokenLabel = 'credana-test'): SoftHsmToken {
  if (!existsSync(SOFTHSM_MODULE)) {
    throw new Error(`SoftHSM2 is not installed (${SOFTHSM_MODULE} missing): apt-get install softhsm2`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'credana-softhsm-'));
  const tokens = path.join(dir, 'tokens');
  mkdirSync(tokens);
  const conf = path.join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  // Random per run: nothing in the repository is this token's PIN.
  const pin = `pin-${Math.random().toString(36).slice(2, 12)}`;
  const soPin = `so-${Math.random().toString(36).slice(2, 12)}`;
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', soPin],
    { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: 'pipe' },
  );
  const pinFile = path.join(dir, 'pin');
  writeFileSync(pinFile, `${pin}\n`);
  chmodSync(pinFile, 0o600);
  return {
    dir,
    modulePath: SOFTHSM_MODULE,
    tokenLabel,
    pin,
    pinFile,
    env: { SOFTHSM2_CONF: conf },
    configEnv: { PKCS11_MODULE: SOFTHSM_MODULE, PKCS11_TOKEN_LABEL: tokenLabel, PKCS11_PIN_FILE: pinFile },
    useInThisProcess() {
      process.env['SOFTHSM2_CONF'] = conf;
    },
    destroy() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
