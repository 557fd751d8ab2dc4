/**
 * `npm run keys -- <command>`: the keys in the HSM (PKCS11_MODULE, PKCS11_TOKEN_LABEL, PKCS11_PIN or
 * PKCS11_PIN_FILE) and the data keys of envelope encryption in DATABASE_URL (docs/operations.md
 * "Keys in an HSM", "Encryption at rest"). Every key is generated inside the token and never leaves it.
 *
 *   generate-signer <label>          a secp256k1 key pair for a chain signer; prints its address
 *   address <label>                  the address of a signer's key
 *   generate-kek <label>             an AES-256 key-encryption key
 *   new-data-key --kek <label>       a data key wrapped under the KEK; new values are sealed with it
 *   rotate --to-kek <label> [--generate-kek] [--new-data-key]
 *                                    re-wraps every data key under the KEK (generating it first with
 *                                    --generate-kek), then optionally starts a new data key under it
 *   status                           data keys per KEK
 *
 * Exit 0 when done, 64 on a usage error, 78 on a configuration or token refusal, one line each.
 */
import { parseArgs } from 'node:util';
import { configFromProcess } from '../shared/config.ts';
import { createDatabase } from '../shared/db/client.ts';
import { dataKeysByKek } from '../shared/db/queries/data-keys.ts';
import { createDataKey, pkcs11KeyWrapper, rewrapDataKeys } from '../shared/hsm/envelope.ts';
import {
  ethereumAccount,
  generateAesKey,
  generateSecp256k1KeyPair,
  HsmError,
  pkcs11Signer,
  tokenFromConfig,
} from '../shared/hsm/index.ts';

const USAGE =
  'usage: npm run keys -- generate-signer|address|generate-kek <label> | new-data-key --kek <label> | rotate --to-kek <label> [--generate-kek] [--new-data-key] | status';

function fail(code: number, line: string): never {
  process.stderr.write(`keys: ${line}\n`);
  process.exit(code);
}

let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    allowPositionals: true,
    options: {
      kek: { type: 'string' },
      'to-kek': { type: 'string' },
      'generate-kek': { type: 'boolean', default: false },
      'new-data-key': { type: 'boolean', default: false },
    },
  });
}
try {
  parsed = parse();
} catch (error) {
  fail(64, `${(error as Error).message}; ${USAGE}`);
}
const [command, label, ...extra] = parsed.positionals;
const LABEL = /^[A-Za-z0-9._-]{1,64}$/;
const needLabel = (value: string | undefined, what: string): string => {
  if (value === undefined || !LABEL.test(value))
    fail(64, `${what} needs a label of 1-64 letters, digits, dots, dashes or underscores; ${USAGE}`);
  return value;
};
if (extra.length > 0) fail(64, `unexpected ${extra.join(' ')}; ${USAGE}`);

const config = configFromProcess();
let token: ReturnType<typeof tokenFromConfig>;
try {
  token = tokenFromConfig(config);
} catch (error) {
  if (error instanceof HsmError) fail(error.code === 'hsm_config' ? 78 : 69, error.message);
  throw error;
}
if (token === null) fail(78, 'PKCS11_MODULE and PKCS11_TOKEN_LABEL are required');
const database = createDatabase({ url: config.DATABASE_URL, poolMax: 1, applicationName: 'credana-keys' });
const out = (line: string) => process.stdout.write(`${line}\n`);
let exitCode = 0;
try {
  switch (command) {
    case 'generate-signer': {
      const name = needLabel(label, 'generate-signer');
      generateSecp256k1KeyPair(token, name);
      out(`keys: generated signer "${name}": ${(await ethereumAccount(pkcs11Signer(token, name))).address}`);
      break;
    }
    case 'address': {
      const name = needLabel(label, 'address');
      out((await ethereumAccount(pkcs11Signer(token, name))).address);
      break;
    }
    case 'generate-kek': {
      const name = needLabel(label, 'generate-kek');
      generateAesKey(token, name);
      out(`keys: generated key-encryption key "${name}"`);
      break;
    }
    case 'new-data-key': {
      const kek = needLabel(parsed.values.kek, 'new-data-key --kek');
      const id = await createDataKey(database.sql, pkcs11KeyWrapper(token), kek);
      out(`keys: data key ${id} wrapped under "${kek}"; new values are sealed with it`);
      break;
    }
    case 'rotate': {
      const kek = needLabel(parsed.values['to-kek'], 'rotate --to-kek');
      if (parsed.values['generate-kek']) generateAesKey(token, kek);
      const wrapper = pkcs11KeyWrapper(token);
      const { rewrapped, already } = await rewrapDataKeys(database.sql, wrapper, kek);
      out(`keys: re-wrapped ${rewrapped} data key(s) under "${kek}" (${already} already were)`);
      if (parsed.values['new-data-key']) {
        out(
          `keys: data key ${await createDataKey(database.sql, wrapper, kek)} wrapped under "${kek}"; new values are sealed with it`,
        );
      }
      break;
    }
    case 'status': {
      const counts = await dataKeysByKek(database.sql);
      if (counts.size === 0) out('keys: no data keys');
      for (const [kek, n] of counts) out(`keys: ${n} data key(s) wrapped under "${kek}"`);
      break;
    }
    default:
      exitCode = 64;
      process.stderr.write(`keys: unknown command ${command ?? '(none)'}; ${USAGE}\n`);
  }
} catch (error) {
  if (!(error instanceof HsmError)) throw error;
  exitCode = error.code === 'hsm_config' ? 78 : 69;
  process.stderr.write(`keys: ${error.message}\n`);
} finally {
  token.close();
  await database.close();
}
process.exit(exitCode);
