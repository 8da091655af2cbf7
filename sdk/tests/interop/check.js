// Reads {"ours": [{line, pairs}], "theirs": [[[k, v], ...], ...]} on stdin.
// Parses each of our lines with the npm `logfmt` package and reports disagreements, and
// writes each of "theirs" with logfmt.stringify so the Rust side can parse it back.
'use strict';
const logfmt = require('logfmt');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const { ours, theirs } = JSON.parse(input);
  const mismatches = [];
  for (const { line, pairs } of ours) {
    const parsed = logfmt.parse(line);
    // Objects put integer-like keys first, so compare in key order.
    const byKey = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    const got = Object.entries(parsed).map(([k, v]) => [k, v === null ? '' : String(v)]).sort(byKey);
    if (JSON.stringify(got) !== JSON.stringify([...pairs].sort(byKey))) {
      mismatches.push({ line, expected: pairs, got });
    }
  }
  // Keys are written in the object's order; the Rust side compares in key order too.
  const stringified = theirs.map((pairs) => logfmt.stringify(Object.fromEntries(pairs)));
  process.stdout.write(JSON.stringify({ checked: ours.length, mismatches, stringified }));
});
