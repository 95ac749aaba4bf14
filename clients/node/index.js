// @verifier-rl/client: a Node.js client for the verifier-rl reward server, built only from
// protos/verifier/v1/verifier.proto (and the standard grpc.health.v1 proto). It shares no code
// with the Python server: that it can talk to the server proves the .proto contract stands alone.
//
// Plain JSON in and out: `reward.params`, `reference`, `details` and `params_schema` are ordinary
// JavaScript values (the google.protobuf.Struct/Value wrapping is done here), field names are the
// proto's (snake_case), enums are names ("STATUS_OK"). Every call returns a Promise.
//
//   const { connect } = require('@verifier-rl/client');
//   const client = connect('127.0.0.1:50051');
//   const { results } = await client.score({ items: [{ id: 'a', completion: '\\boxed{4}',
//     reward: { name: 'math' }, reference: '4' }] });
//   client.close();
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The published package carries a copy of protos/ (copied by `npm pack`'s prepack); in the
// repository the client reads the one source of truth at the top level.
const PROTO_DIRS = [path.join(__dirname, 'protos'), path.resolve(__dirname, '..', '..', 'protos')];
const PROTO_ROOT = PROTO_DIRS.find((d) => fs.existsSync(path.join(d, 'verifier', 'v1', 'verifier.proto')));
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  // google/protobuf/*.proto (struct.proto) come bundled with protobufjs, which proto-loader uses;
  // grpc/health/v1/health.proto always ships in this package's own protos/.
  includeDirs: [PROTO_ROOT, path.join(__dirname, 'protos')].filter(Boolean),
};
/** Default per-call deadline in seconds (VERIFIER_CLIENT_DEADLINE_S overrides). */
const DEFAULT_DEADLINE_S = Number(process.env.VERIFIER_CLIENT_DEADLINE_S || 10);

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

function loadService(def, pkgPath) {
  let obj = grpc.loadPackageDefinition(def);
  for (const part of pkgPath.split('.')) obj = obj[part];
  return obj;
}

let verifierDef = null;
function loadVerifierDef() {
  if (!PROTO_ROOT) throw new Error(`verifier/v1/verifier.proto not found under ${PROTO_DIRS.join(' or ')}`);
  verifierDef = verifierDef || protoLoader.loadSync('verifier/v1/verifier.proto', LOADER_OPTIONS);
  return verifierDef;
}

function unary(client, method, request, deadlineS) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: new Date(Date.now() + deadlineS * 1000) }, (err, resp) =>
      err ? reject(err) : resolve(resp),
    );
  });
}

/**
 * Connect to a verifier-rl server.
 * @param {string} target host:port or unix:/path/to/sock
 * @param {{credentials?: object, deadlineS?: number, metadata?: Record<string,string>}} [options]
 *   credentials: a grpc-js ChannelCredentials (default: plain text); deadlineS: per-call deadline;
 *   metadata: headers sent with every call (e.g. {authorization: 'Bearer …'} when the server has
 *   tokens configured).
 * @returns {{score: Function, scoreStream: Function, listVerifiers: Function, health: Function, close: Function}}
 *   A gRPC error rejects the Promise with grpc-js's error ({code, details}); a malformed request
 *   rejects with a TypeError naming the field before anything is sent.
 */
function connect(target, options = {}) {
  const def = loadVerifierDef();
  const creds = options.credentials || grpc.credentials.createInsecure();
  const deadlineS = options.deadlineS || DEFAULT_DEADLINE_S;
  const Verifier = loadService(def, 'verifier.v1.VerifierService');
  const client = new Verifier(target, creds);
  // Headers go per call: grpc-js refuses call credentials on a plain-text channel.
  const meta = () => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(options.metadata || {})) md.set(k, v);
    return md;
  };
  const call = (method, request) =>
    new Promise((resolve, reject) => {
      client[method](request, meta(), { deadline: new Date(Date.now() + deadlineS * 1000) }, (err, resp) =>
        err ? reject(err) : resolve(resp),
      );
    });
  let health = null;
  return {
    /** Score one ScoreRequest ({items: [...]}, plain JSON); resolves to {results: [...]}. */
    async score(request) {
      return responseToJson(await call('Score', requestFromJson(def, request)));
    },
    /** Send several ScoreRequests on one stream; resolves to the responses, in order. */
    scoreStream(requests) {
      const reqs = checkArray(requests, 'requests').map((r, i) => requestFromJson(def, r, `requests[${i}]`));
      return new Promise((resolve, reject) => {
        const out = [];
        const stream = client.ScoreStream(meta(), { deadline: new Date(Date.now() + deadlineS * 1000) });
        stream.on('data', (resp) => out.push(responseToJson(resp)));
        stream.on('error', reject);
        stream.on('end', () => resolve(out));
        for (const req of reqs) stream.write(req);
        stream.end();
      });
    },
    /** The server's verifiers with their params' JSON Schemas: {verifiers: [...]}. */
    async listVerifiers() {
      return listToJson(await call('ListVerifiers', {}));
    },
    /** gRPC health status name ('SERVING', ...) of the server or of one service name. */
    async health(service = '') {
      if (!health) {
        const healthDef = protoLoader.loadSync('grpc/health/v1/health.proto', LOADER_OPTIONS);
        health = new (loadService(healthDef, 'grpc.health.v1.Health'))(target, creds);
      }
      return (await unary(health, 'Check', { service }, deadlineS)).status;
    },
    close() {
      client.close();
      if (health) health.close();
    },
  };
}

module.exports = {
  connect,
  toValue,
  toStruct,
  fromValue,
  fromStruct,
  requestFromJson: (req) => requestFromJson(loadVerifierDef(), req),
  responseToJson,
  DEFAULT_DEADLINE_S,
};
