#!/usr/bin/env node
// Minimal gRPC client for the verifier contract, built only from protos/verifier/v1/verifier.proto
// (plus a copy of the standard grpc.health.v1 proto). It shares no code with the Python server.
//
//   node client.js <target> list
//   node client.js <target> score   < ScoreRequest JSON object
//   node client.js <target> stream  < JSON array of ScoreRequest objects
//   node client.js <target> health [service]
//
// <target>: host:port (e.g. 127.0.0.1:50051) or unix:/path/to/sock. Plain-text (insecure) channel.
// Output: one JSON line per response on stdout (health: the bare status name, e.g. SERVING).
// google.protobuf.Struct/Value fields are plain JSON on stdin and stdout.
// Exit codes: 0 ok, 2 usage / bad stdin, 3 gRPC error (stdout: {"error":{"code":N,"details":"..."}}).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  // google/protobuf/*.proto (struct.proto) come bundled with protobufjs, which proto-loader uses.
  includeDirs: [PROTO_ROOT, __dirname],
};
const DEADLINE_S = Number(process.env.VERIFIER_CLIENT_DEADLINE_S || 10);

function usage(msg) {
  if (msg) process.stderr.write(`client.js: ${msg}\n`);
  process.stderr.write(
    'usage: node client.js <target> list|score|stream|health [service]\n' +
      '  <target>: host:port or unix:/path/to/sock\n',
  );
  process.exitCode = 2;
}

// ---- google.protobuf.Struct / Value <-> plain JSON (proto-loader object form) ----

function toValue(v) {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  if (typeof v === 'object') return { structValue: toStruct(v) };
  throw new TypeError(`cannot convert ${typeof v} to google.protobuf.Value`);
}

function toStruct(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new TypeError('google.protobuf.Struct must be a JSON object');
  }
  const fields = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}

function fromValue(v) {
  if (v === null || v === undefined) return null;
  // With oneofs: true, `kind` names the member that is set; absent for an empty Value.
  switch (v.kind) {
    case 'numberValue':
      return v.numberValue;
    case 'stringValue':
      return v.stringValue;
    case 'boolValue':
      return v.boolValue;
    case 'structValue':
      return fromStruct(v.structValue);
    case 'listValue':
      return ((v.listValue && v.listValue.values) || []).map(fromValue);
    default: // 'nullValue' or unset
      return null;
  }
}

// An unset Struct (null in proto-loader's object form) reads as {} like proto3 does.
function fromStruct(s) {
  const out = {};
  if (!s || !s.fields) return out;
  for (const [k, v] of Object.entries(s.fields)) out[k] = fromValue(v);
  return out;
}

// ---- request / response shaping ----

// Field names of a message, from the proto itself: stdin keys that the proto does not name are
// rejected (protobufjs would drop them silently, hiding typos in a test's request).
function fieldNames(def, msgName) {
  return new Set(def[`verifier.v1.${msgName}`].type.field.map((f) => f.name));
}

function checkObject(def, obj, msgName, where) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new TypeError(`${where} must be a JSON object (${msgName})`);
  }
  const names = fieldNames(def, msgName);
  for (const k of Object.keys(obj)) {
    if (!names.has(k)) throw new TypeError(`${where}: ${msgName} has no field "${k}"`);
  }
}

function checkArray(v, where) {
  if (!Array.isArray(v)) throw new TypeError(`${where} must be a JSON array`);
  return v;
}

// Plain-JSON ScoreRequest (reward.params: JSON object, reference: any JSON) -> proto-loader form.
function requestFromJson(def, req, where = 'ScoreRequest') {
  checkObject(def, req, 'ScoreRequest', where);
  const items = req.items === undefined ? [] : checkArray(req.items, `${where}.items`);
  return {
    items: items.map((item, i) => {
      const at = `${where}.items[${i}]`;
      checkObject(def, item, 'Item', at);
      const out = { ...item };
      if (item.messages !== undefined) {
        checkArray(item.messages, `${at}.messages`).forEach((m, j) =>
          checkObject(def, m, 'ChatMessage', `${at}.messages[${j}]`),
        );
      }
      if (item.reward !== undefined && item.reward !== null) {
        checkObject(def, item.reward, 'RewardSpec', `${at}.reward`);
        out.reward = { ...item.reward };
        if (item.reward.params !== undefined && item.reward.params !== null) {
          out.reward.params = toStruct(item.reward.params);
        }
      }
      // A key that is absent stays unset; any JSON value (null included) becomes a Value.
      if ('reference' in item) out.reference = toValue(item.reference);
      return out;
    }),
  };
}

function responseToJson(resp) {
  return {
    results: (resp.results || []).map((r) => ({ ...r, details: fromStruct(r.details) })),
  };
}

function listToJson(resp) {
  return {
    verifiers: (resp.verifiers || []).map((v) => ({
      ...v,
      params_schema: fromStruct(v.params_schema),
    })),
  };
}

// ---- I/O helpers ----

function printJson(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function printError(err) {
  printJson({
    error: {
      code: typeof err.code === 'number' ? err.code : grpc.status.UNKNOWN,
      details: err.details !== undefined ? String(err.details) : String(err.message),
    },
  });
  process.exitCode = 3;
}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

async function readJsonStdin() {
  const text = await readStdin();
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TypeError(`stdin is not valid JSON: ${e.message}`);
  }
}

function deadline() {
  return new Date(Date.now() + DEADLINE_S * 1000);
}

function loadService(def, pkgPath) {
  let obj = grpc.loadPackageDefinition(def);
  for (const part of pkgPath.split('.')) obj = obj[part];
  return obj;
}

// ---- commands ----

async function main(argv) {
  const [target, command, ...rest] = argv;
  if (!target || !command) return usage('missing <target> or <command>');
  const known = { list: 0, score: 0, stream: 0, health: 1 };
  if (!(command in known)) return usage(`unknown command: ${command}`);
  if (rest.length > known[command]) return usage(`too many arguments for ${command}`);

  const creds = grpc.credentials.createInsecure();

  if (command === 'health') {
    const healthDef = protoLoader.loadSync(path.join(__dirname, 'health.proto'), LOADER_OPTIONS);
    const Health = loadService(healthDef, 'grpc.health.v1.Health');
    const client = new Health(target, creds);
    client.Check({ service: rest[0] || '' }, { deadline: deadline() }, (err, resp) => {
      if (err) printError(err);
      else process.stdout.write(`${resp.status}\n`);
      client.close();
    });
    return;
  }

  const def = protoLoader.loadSync('verifier/v1/verifier.proto', LOADER_OPTIONS);
  const VerifierService = loadService(def, 'verifier.v1.VerifierService');

  if (command === 'list') {
    const client = new VerifierService(target, creds);
    client.ListVerifiers({}, { deadline: deadline() }, (err, resp) => {
      if (err) printError(err);
      else printJson(listToJson(resp));
      client.close();
    });
    return;
  }

  let input;
  try {
    input = await readJsonStdin();
    if (command === 'score') {
      input = requestFromJson(def, input);
    } else {
      if (!Array.isArray(input)) throw new TypeError('stream expects a JSON array of ScoreRequest objects');
      input = input.map((req, i) => requestFromJson(def, req, `stdin[${i}]`));
    }
  } catch (e) {
    process.stderr.write(`client.js: bad ${command} input: ${e.message}\n`);
    process.exitCode = 2;
    return;
  }

  const client = new VerifierService(target, creds);

  if (command === 'score') {
    client.Score(input, { deadline: deadline() }, (err, resp) => {
      if (err) printError(err);
      else printJson(responseToJson(resp));
      client.close();
    });
    return;
  }

  // stream
  const call = client.ScoreStream({ deadline: deadline() });
  let failed = false;
  call.on('data', (resp) => printJson(responseToJson(resp)));
  call.on('error', (err) => {
    failed = true;
    printError(err);
    client.close();
  });
  call.on('end', () => {
    if (!failed) client.close();
  });
  for (const req of input) call.write(req);
  call.end();
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`client.js: ${e && e.stack ? e.stack : e}\n`);
    process.exitCode = 1;
  });
}

module.exports = { toValue, toStruct, fromValue, fromStruct, requestFromJson, responseToJson };
