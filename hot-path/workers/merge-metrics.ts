/**
 * Merges the Prometheus text expositions of several processes into one: every sample gets a `worker`
 * label naming its source, and each metric family is written once (its HELP and TYPE, then the samples
 * of every source), as the text format requires a family's lines to be one group. The primary of a
 * multi-worker hot path serves this on its internal listener, so one scrape target carries one series
 * per worker: sum the counters across workers, take the max (or min) of the gauges.
 */

/** One source's exposition, and the value its samples get in the `worker` label. */
export interface MetricsSource {
  worker: string;
  text: string;
}

interface Family {
  help: string | null;
  type: string | null;
  samples: string[];
}

const FAMILY_LINE = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/;
const SAMPLE_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

/** A label value in the text format: backslash, double quote and newline escaped. */
function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** `name{a="1"} 3` → `name{worker="2",a="1"} 3`; `name 3` → `name{worker="2"} 3`. */
export function withWorkerLabel(sample: string, worker: string): string {
  const name = SAMPLE_NAME.exec(sample)?.[0];
  if (name === undefined) return sample;
  const label = `worker="${labelValue(worker)}"`;
  const rest = sample.slice(name.length);
  if (rest.startsWith('{}')) return `${name}{${label}}${rest.slice(2)}`;
  if (rest.startsWith('{')) return `${name}{${label},${rest.slice(1)}`;
  return `${name}{${label}}${rest}`;
}

/**
 * The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` samples (a summary's
 * `_sum` and `_count`) follow their family's HELP and TYPE lines, which name the family without them.
 */
function familyOf(sampleName: string, current: string | null): string {
  if (current !== null && (sampleName === current || sampleName.startsWith(`${current}_`))) return current;
  return sampleName;
}

export function mergeExpositions(sources: readonly MetricsSource[]): string {
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let found = families.get(name);
    if (found === undefined) {
      found = { help: null, type: null, samples: [] };
      families.set(name, found);
    }
    return found;
  };
  for (const source of sources) {
    let current: string | null = null;
    for (const line of source.text.split('\n')) {
      if (line.trim() === '') continue;
      const head = FAMILY_LINE.exec(line);
      if (head !== null) {
        const name = head[2] ?? '';
        current = name;
        const target = family(name);
        if (head[1] === 'HELP') target.help ??= line;
        else target.type ??= line;
        continue;
      }
      if (line.startsWith('#')) continue;
      const sampleName = SAMPLE_NAME.exec(line)?.[0];
      if (sampleName === undefined) continue;
      current = familyOf(sampleName, current);
      family(current).samples.push(withWorkerLabel(line, source.worker));
    }
  }
  const out: string[] = [];
  for (const { help, type, samples } of families.values()) {
    if (help !== null) out.push(help);
    if (type !== null) out.push(type);
    out.push(...samples);
  }
  return `${out.join('\n')}\n`;
}
