// Validates recorded Rocket.Chat REST requests with the validators `@rocket.chat/rest-typings`
// publishes (the ajv schemas the server checks requests with), for every pinned version.
//
//   node validate.mjs <node_modules dir> <requests.jsonl>
//
// Each line of the JSONL is one request as the simulator recorded it: method, route (the
// pattern, `{param}` style), path, query (raw), content_type, body. Exit status: 0 when every
// checked request passes in every version, 1 on a violation (each named by version, route and
// field), 2 when the input or the packages cannot be used.
import { readFileSync } from 'node:fs';
import { register } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

register(pathToFileURL(join(import.meta.dirname, 'resolve-hooks.mjs')));

// Route → the validator the package exports for it and which part of the request it checks, or
// the reason the route has none. A version that lacks a named validator leaves the route
// unchecked; unchecked routes are listed, never counted as checked.
// The server applies these through `validateParams` (apps/meteor/app/api/server/ApiClass.ts),
// except `livechat/room` and `livechat/visitor/:token`, which it checks with Meteor `check()`
// for the same fields (apps/meteor/app/livechat/server/api/v1/room.ts, visitor.ts); their
// schemas here are the package's description of those routes.
const ROUTES = {
  // `login` is registered without `validateParams`: `loginCompatibility` converts the body (a
  // string `user` included), so the package's isLoginProps is not what the server applies.
  'POST /api/v1/login': 'the server converts the body with loginCompatibility, not ajv',
  'GET /api/info': 'no parameters',
  'GET /api/v1/me': 'no parameters',
  'POST /api/v1/chat.sendMessage': { validator: 'isChatSendMessageProps', part: 'body' },
  'GET /api/v1/chat.getMessage': { validator: 'isChatGetMessageProps', part: 'query' },
  'GET /api/v1/users.info': { validator: 'isUsersInfoParamsGetProps', part: 'query' },
  'POST /api/v1/im.create': { validator: 'isDmCreateProps', part: 'body' },
  'GET /api/v1/settings.public': { validator: 'isSettingsPublicWithPaginationProps', part: 'query' },
  'GET /api/v1/settings/{id}': 'no validator published',
  'GET /api/v1/permissions.listAll': { validator: 'isPermissionsListAll', part: 'query' },
  'POST /api/v1/livechat/visitor': 'the server checks the body with Meteor check(), no ajv schema',
  'GET /api/v1/livechat/visitor/{token}': { validator: 'isLivechatVisitorTokenGetProps', part: 'path' },
  'GET /api/v1/livechat/room': { validator: 'isGETLivechatRoomParams', part: 'query' },
  'POST /api/v1/livechat/room.close': { validator: 'isPOSTLivechatRoomCloseParams', part: 'body' },
  'POST /api/v1/livechat/message': { validator: 'isPOSTLivechatMessageParams', part: 'body' },
  'GET /api/v1/livechat/message/{id}': { validator: 'isGETLivechatMessageIdParams', part: 'query' },
  'GET /api/v1/livechat/messages.history/{rid}': {
    validator: 'isGETLivechatMessagesHistoryRidParams',
    part: 'query',
  },
  'POST /api/v1/livechat/upload/{rid}': 'multipart body, no validator published',
  'GET /api/v1/livechat/config': { validator: 'isGETLivechatConfigParams', part: 'query' },
  'GET /api/v1/livechat/department': { validator: 'isGETLivechatDepartmentProps', part: 'query' },
  'GET /file-upload/{id}/{name}': 'file download, not a REST API route',
};

function fail(message) {
  console.error(`contract: ${message}`);
  process.exit(2);
}

const [modules, input] = process.argv.slice(2);
if (!modules || !input) fail('usage: node validate.mjs <node_modules dir> <requests.jsonl>');

let manifest;
try {
  manifest = JSON.parse(readFileSync(join(import.meta.dirname, 'package.json'), 'utf8'));
} catch (err) {
  fail(`cannot read contract/package.json: ${err.message}`);
}
const versions = Object.entries(manifest.dependencies)
  .filter(([alias]) => alias.startsWith('rest-typings-'))
  .map(([alias, spec]) => ({ alias, label: spec.replace(/^npm:/, '') }));

let requests;
try {
  requests = readFileSync(input, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line, i) => {
      try {
        return JSON.parse(line);
      } catch (err) {
        throw new Error(`line ${i + 1}: ${err.message}`);
      }
    });
} catch (err) {
  fail(`cannot read ${input}: ${err.message}`);
}
if (requests.length === 0) fail(`${input} holds no requests: nothing was recorded`);

// `{param}` pattern + concrete path → { param: value }.
function pathParams(route, path) {
  const pattern = route.split('/');
  const actual = path.split('/');
  const params = {};
  pattern.forEach((segment, i) => {
    const name = /^\{(.+)\}$/.exec(segment);
    if (name && actual[i] !== undefined) params[name[1]] = decodeURIComponent(actual[i]);
  });
  return params;
}

function queryParams(raw) {
  const params = {};
  for (const [key, value] of new URLSearchParams(raw)) {
    if (key in params) params[key] = [].concat(params[key], value);
    else params[key] = value;
  }
  return params;
}

// The field an ajv error is about: the missing or extra property, else the instance path.
function field(error) {
  const p = error.params ?? {};
  const name = p.missingProperty ?? p.additionalProperty ?? p.propertyName;
  const base = error.instancePath.replace(/^\//, '').replaceAll('/', '.');
  if (name) return base ? `${base}.${name}` : name;
  return base || '(whole object)';
}

// Rocket.Chat's own spelling of the route, e.g. `livechat/messages.history/:rid`.
function display(route) {
  return route.replace(/^\/api\/v1\//, '').replace(/\{([^}]+)\}/g, ':$1');
}

let violations = 0;
for (const { alias, label } of versions) {
  let pkg;
  try {
    pkg = await import(pathToFileURL(join(modules, alias, 'dist', 'index.js')).href);
  } catch (err) {
    fail(`cannot load ${label} from ${join(modules, alias)}: ${err.message}`);
  }
  const checked = new Map();
  const unchecked = new Map();
  for (const request of requests) {
    const key = `${request.method} ${request.route}`;
    const name = `${request.method} ${display(request.route)}`;
    if (!(key in ROUTES)) {
      violations += 1;
      console.log(
        `VIOLATION ${label} ${name}: route not in contract/validate.mjs ROUTES; ` +
          'map it to the package validator the server uses for it (or to the reason it has none)',
      );
      continue;
    }
    const entry = ROUTES[key];
    const validator = typeof entry === 'object' && pkg[entry.validator];
    if (typeof validator !== 'function') {
      const why = typeof entry === 'string' ? entry : `${entry.validator} not exported`;
      unchecked.set(name, { why, count: (unchecked.get(name)?.count ?? 0) + 1 });
      continue;
    }
    let data;
    if (entry.part === 'body') data = structuredClone(request.body ?? {});
    else if (entry.part === 'query') data = queryParams(request.query ?? '');
    else data = pathParams(request.route, request.path ?? '');
    checked.set(name, (checked.get(name) ?? 0) + 1);
    if (!validator(data)) {
      for (const error of validator.errors ?? []) {
        violations += 1;
        console.log(
          `VIOLATION ${label} ${name}: field ${field(error)}: ${error.message} ` +
            `(${entry.validator}, ${entry.part} ${JSON.stringify(data)})`,
        );
      }
    }
  }
  for (const [name, count] of checked) console.log(`${label}: checked ${name} x${count}`);
  for (const [name, { why, count }] of unchecked) {
    console.log(`${label}: unchecked ${name} x${count} (${why})`);
  }
}
if (violations > 0) {
  console.log(`contract: ${violations} violation(s)`);
  process.exit(1);
}
console.log('contract: every checked request matches every pinned version');
