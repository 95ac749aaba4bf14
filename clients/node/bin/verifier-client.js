#!/usr/bin/env node
// Command-line front of @verifier-rl/client (see ../README.md):
//
//   verifier-client <target> list
//   verifier-client <target> score   < ScoreRequest JSON object
//   verifier-client <target> stream  < JSON array of ScoreRequest objects
//   verifier-client <target> health [service]
//
// <target>: host:port or unix:/path/to/sock (plain text). One JSON line per response on stdout
// (health: the bare status name, e.g. SERVING). Exit codes: 0 ok, 2 usage / bad stdin,
// 3 gRPC error (stdout: {"error":{"code":N,"details":"..."}}). VERIFIER_TOKEN, when set, is sent
// as `authorization: Bearer <token>`.
'use strict';

const grpc = require('@grpc/grpc-js');
const { connect } = require('..');

const ARITY = { list: 0, score: 0, stream: 0, health: 1 };

function usage(msg) {
  if (msg) process.stderr.write(`verifier-client: ${msg}\n`);
  process.stderr.write(
    'usage: verifier-client <target> list|score|stream|health [service]\n' +
      '  <target>: host:port or unix:/path/to/sock\n',
  );
  process.exitCode = 2;
}

function printJson(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function readJsonStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TypeError(`stdin is not valid JSON: ${e.message}`);
  }
}

async function main(argv) {
  const [target, command, ...rest] = argv;
  if (!target || !command) return usage('missing <target> or <command>');
  if (!(command in ARITY)) return usage(`unknown command: ${command}`);
  if (rest.length > ARITY[command]) return usage(`too many arguments for ${command}`);

  let input;
  if (command === 'score' || command === 'stream') {
    try {
      input = await readJsonStdin();
      if (command === 'stream' && !Array.isArray(input)) {
        throw new TypeError('stream expects a JSON array of ScoreRequest objects');
      }
    } catch (e) {
      process.stderr.write(`verifier-client: bad ${command} input: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
  }
  const token = process.env.VERIFIER_TOKEN;
  const client = connect(target, token ? { metadata: { authorization: `Bearer ${token}` } } : {});
  try {
    if (command === 'health') process.stdout.write(`${await client.health(rest[0] || '')}\n`);
    else if (command === 'list') printJson(await client.listVerifiers());
    else if (command === 'score') printJson(await client.score(input));
    else for (const resp of await client.scoreStream(input)) printJson(resp);
  } catch (err) {
    if (err instanceof TypeError) {
      // Raised before anything is sent: the request does not fit the proto.
      process.stderr.write(`verifier-client: bad ${command} input: ${err.message}\n`);
      process.exitCode = 2;
    } else {
      printJson({
        error: {
          code: typeof err.code === 'number' ? err.code : grpc.status.UNKNOWN,
          details: err.details !== undefined ? String(err.details) : String(err.message),
        },
      });
      process.exitCode = 3;
    }
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).catch((e) => {
  process.stderr.write(`verifier-client: ${e && e.stack ? e.stack : e}\n`);
  process.exitCode = 1;
});
