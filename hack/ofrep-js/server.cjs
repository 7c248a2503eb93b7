'use strict';
// Drives the published @openfeature/server-sdk with @openfeature/ofrep-provider against the
// OFREP server at the URL given as the first argument, for flags/ofrep_npm_test.go.
//
// It reads one JSON command a line on stdin and writes one JSON line on stdout for each:
//   {"type":"boolean"|"string"|"number"|"object","key":"...","default":...,"context":{...}}
//     -> the SDK's evaluation details {value, variant, reason, errorCode, errorMessage, flagMetadata}
// A line {"ready":true} is written once the provider is ready. Errors the SDK throws (it
// should throw none) are answered {"thrown":"..."}.

const readline = require('node:readline');
const { OpenFeature } = require('@openfeature/server-sdk');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

function out(v) {
  process.stdout.write(JSON.stringify(v) + '\n');
}

async function evaluate(client, cmd) {
  const args = [cmd.key, cmd.default, cmd.context || {}];
  switch (cmd.type) {
    case 'boolean':
      return client.getBooleanDetails(...args);
    case 'string':
      return client.getStringDetails(...args);
    case 'number':
      return client.getNumberDetails(...args);
    case 'object':
      return client.getObjectDetails(...args);
    default:
      throw new Error(`unknown type ${JSON.stringify(cmd.type)}: use boolean, string, number or object`);
  }
}

async function main() {
  const baseUrl = process.argv[2];
  if (!baseUrl) {
    throw new Error('usage: node server.cjs http://127.0.0.1:PORT');
  }
  await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl }));
  const client = OpenFeature.getClient();
  out({ ready: true });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    try {
      const d = await evaluate(client, JSON.parse(line));
      out({
        value: d.value,
        variant: d.variant,
        reason: d.reason,
        errorCode: d.errorCode,
        errorMessage: d.errorMessage,
        flagMetadata: d.flagMetadata,
      });
    } catch (e) {
      out({ thrown: String(e && e.stack ? e.stack : e) });
    }
  }
  await OpenFeature.close();
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
