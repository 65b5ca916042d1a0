// Parses an AsyncAPI document with the official parser (@asyncapi/parser),
// prints every diagnostic to stderr and, when the document is valid, a JSON
// summary to stdout: channel addresses, and each message's payload $id and
// example payloads (checked against api/schemas by asyncapi_test.go).
// Usage: node asyncapi-check.mjs <parser's node_modules dir> <document>
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.argv[2], 'noop.js'));
const { Parser, fromFile } = require('@asyncapi/parser');

const { document, diagnostics } = await fromFile(new Parser(), process.argv[3]).parse();
for (const d of diagnostics) {
  console.error(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join('.') }));
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (!document || errors.length > 0) {
  console.error(`${errors.length} error(s)`);
  process.exit(1);
}
const messages = document.components().messages().all().map((m) => ({
  name: m.id(),
  schema: m.payload()?.json()?.$id ?? '',
  examples: m.examples().all().map((e) => e.payload()),
}));
console.log(JSON.stringify({ channels: document.channels().all().map((c) => c.address()), messages }));
