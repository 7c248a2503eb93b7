'use strict';
// Drives the published @openfeature/web-sdk with @openfeature/ofrep-web-provider against the
// OFREP server at the URL given as the first argument, for flags/ofrep_npm_test.go.
//
// Node has fetch but no EventSource, which a browser gives the web provider for OFREP event
// streams: the published `eventsource` package (a WHATWG EventSource over fetch) stands in
// for the browser's. Both talk to the real server; they are only wrapped to record what
// went over the wire, so that the test can check ETag/304 polling and the stream's URL.
//
// It reads one JSON command a line on stdin and writes one JSON line on stdout for each:
//   {"op":"init","context":{...},"options":{...}}   provider options (pollInterval,
//       changeDetection, ...) on top of baseUrl; answers {"ready":true} once ready
//   {"op":"eval","type":"boolean"|"string"|"number"|"object","key":"...","default":...}
//       -> the SDK's evaluation details {value, variant, reason, errorCode, errorMessage, flagMetadata}
//   {"op":"context","context":{...}}   sets the evaluation context (the provider re-fetches)
//   {"op":"wait","key":"...","timeoutMs":N}   the next ConfigurationChanged event naming key
//       -> {"event":{...}}, or {"timeout":true,"events":[...]} with the events seen instead
//   {"op":"wire"}   -> {"requests":[...],"streams":[...]}: each bulk request's url,
//       If-None-Match, status and ETag since the last "wire", and every event stream the
//       provider made, with its url and whether it is open
// Errors are answered {"thrown":"..."}.

const readline = require('node:readline');
const { EventSource } = require('eventsource');
const { OpenFeature, ProviderEvents } = require('@openfeature/web-sdk');
const { OFREPWebProvider } = require('@openfeature/ofrep-web-provider');

const requests = [];
const streams = [];

class RecordingEventSource extends EventSource {
  constructor(url, init) {
    super(url, init);
    const stream = { url: String(url), open: false };
    streams.push(stream);
    this.addEventListener('open', () => {
      stream.open = true;
    });
    this.addEventListener('error', () => {
      stream.open = this.readyState === 1;
    });
  }
}
globalThis.EventSource = RecordingEventSource;

async function recordingFetch(input, init) {
  const req = input instanceof Request ? input : new Request(input, init);
  const res = await fetch(req, init);
  requests.push({
    method: req.method,
    url: req.url,
    ifNoneMatch: req.headers.get('If-None-Match'),
    status: res.status,
    etag: res.headers.get('ETag'),
  });
  return res;
}

function out(v) {
  process.stdout.write(JSON.stringify(v) + '\n');
}

const changes = []; // ConfigurationChanged events not yet consumed by "wait"
let waiter = null;

function take(key) {
  const i = changes.findIndex((ev) => (ev.flagsChanged || []).includes(key));
  return i < 0 ? null : changes.splice(i, 1)[0];
}

function wait(key, timeoutMs) {
  const ev = take(key);
  if (ev) return Promise.resolve({ event: ev });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiter = null;
      resolve({ timeout: true, events: changes.slice() });
    }, timeoutMs);
    waiter = () => {
      const ev = take(key);
      if (!ev) return;
      clearTimeout(timer);
      waiter = null;
      resolve({ event: ev });
    };
  });
}

let client;

async function run(cmd, baseUrl) {
  switch (cmd.op) {
    case 'init': {
      await OpenFeature.setContext(cmd.context || {});
      const provider = new OFREPWebProvider({
        baseUrl,
        fetchImplementation: recordingFetch,
        ...(cmd.options || {}),
      });
      client = OpenFeature.getClient();
      client.addHandler(ProviderEvents.ConfigurationChanged, (ev) => {
        changes.push({ flagsChanged: ev.flagsChanged, message: ev.message });
        if (waiter) waiter();
      });
      await OpenFeature.setProviderAndWait(provider);
      return { ready: true };
    }
    case 'eval': {
      const args = [cmd.key, cmd.default];
      let d;
      switch (cmd.type) {
        case 'boolean':
          d = client.getBooleanDetails(...args);
          break;
        case 'string':
          d = client.getStringDetails(...args);
          break;
        case 'number':
          d = client.getNumberDetails(...args);
          break;
        case 'object':
          d = client.getObjectDetails(...args);
          break;
        default:
          throw new Error(`unknown type ${JSON.stringify(cmd.type)}: use boolean, string, number or object`);
      }
      return {
        value: d.value,
        variant: d.variant,
        reason: d.reason,
        errorCode: d.errorCode,
        errorMessage: d.errorMessage,
        flagMetadata: d.flagMetadata,
      };
    }
    case 'context':
      await OpenFeature.setContext(cmd.context || {});
      return { ok: true };
    case 'wait':
      return wait(cmd.key, cmd.timeoutMs || 10000);
    case 'wire':
      return { requests: requests.splice(0), streams };
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}: use init, eval, context, wait or wire`);
  }
}

async function main() {
  const baseUrl = process.argv[2];
  if (!baseUrl) {
    throw new Error('usage: node web.cjs http://127.0.0.1:PORT');
  }
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    try {
      out(await run(JSON.parse(line), baseUrl));
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
