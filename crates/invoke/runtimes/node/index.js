// Quarters' Node.js runtime: the loop between the Runtime API and a handler `file.export`.
//
// It runs on the host's `node`, inside the environment's sandbox, with Node's own modules only,
// and behaves as AWS's runtime interface client (aws-lambda-ric) does: the same handler
// resolution (CommonJS, ES modules, nested paths), the same error types and bodies (`trace`),
// async and callback handlers with `callbackWaitsForEmptyEventLoop`, the same context object
// and the same console log lines, in Text or JSON.
//
// It is CommonJS and speaks HTTP/1.1 itself, on the connection the sandbox's init opened for it
// (fd 3, read and written with `fs`): an ES module entry point, `http` and even `net` would add
// their loaders' cost (several ms each) to every cold start. ES module handlers are still loaded
// with `import()`; `net` is loaded only if a second connection is ever needed.

"use strict";

const fs = require("fs");
const path = require("path");
const util = require("util");

const API = "/2018-06-01/runtime";
const ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type";

// ------------------------------------------------------------------ errors

function runtimeError(name) {
  const cls = class extends Error {};
  cls.prototype.name = `Runtime.${name}`;
  return cls;
}
const ImportModuleError = runtimeError("ImportModuleError");
const HandlerNotFound = runtimeError("HandlerNotFound");
const MalformedHandlerName = runtimeError("MalformedHandlerName");
const UserCodeSyntaxError = runtimeError("UserCodeSyntaxError");
class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
UnhandledPromiseRejection.prototype.name = "Runtime.UnhandledPromiseRejection";

function looksLikeError(o) {
  return o && typeof o.name === "string" && typeof o.message === "string" && typeof o.stack === "string";
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

/** The body posted for an error: `errorType`, `errorMessage`, `trace`. */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || looksLikeError(error)) {
      return {
        errorType: error.name?.replace(/\x7F/g, "%7F"),
        errorMessage: error.message?.replace(/\x7F/g, "%7F"),
        trace: error.stack.replace(/\x7F/g, "%7F").split("\n"),
      };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch (_) {
    return {
      errorType: "handled",
      errorMessage:
        "callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack",
    };
  }
}

function withEnumerableProperties(value) {
  if (!(value instanceof Error)) return value;
  const ret = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
  if (typeof value.stack === "string") ret.stack = value.stack.split("\n");
  return ret;
}

function toFormatted(error) {
  try {
    return "\t" + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch (_) {
    return "\t" + JSON.stringify(toRapidResponse(error));
  }
}

// ------------------------------------------------------------------ console

const current = { requestId: undefined, tenantId: undefined };
const LEVELS = {
  TRACE: { name: "TRACE", priority: 1 },
  DEBUG: { name: "DEBUG", priority: 2 },
  INFO: { name: "INFO", priority: 3 },
  WARN: { name: "WARN", priority: 4 },
  ERROR: { name: "ERROR", priority: 5 },
  FATAL: { name: "FATAL", priority: 6 },
};
const JSON_FORMAT = process.env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === "JSON";

function jsonErrorReplacer(_, value) {
  if (value instanceof Error) {
    return Object.assign(
      {
        errorType: value?.constructor?.name ?? "UnknownError",
        errorMessage: value.message,
        stackTrace: typeof value.stack === "string" ? value.stack.split("\n") : value.stack,
      },
      value,
    );
  }
  return value;
}

function formatJson(level, params) {
  const result = { timestamp: new Date().toISOString(), level: level.name, requestId: current.requestId };
  if (current.tenantId !== undefined && current.tenantId !== null) result.tenantId = current.tenantId;
  if (params.length === 1) {
    result.message = params[0];
    try {
      return JSON.stringify(result, jsonErrorReplacer);
    } catch (_) {
      result.message = util.format(result.message);
      return JSON.stringify(result);
    }
  }
  result.message = util.format(...params);
  for (const p of params) {
    if (p instanceof Error) {
      result.errorType = p?.constructor?.name ?? "UnknownError";
      result.errorMessage = p.message;
      result.stackTrace = typeof p.stack === "string" ? p.stack.split("\n") : [];
      break;
    }
  }
  return JSON.stringify(result);
}

function writeLog(level, ...params) {
  const line = JSON_FORMAT
    ? formatJson(level, params)
    : `${new Date().toISOString()}\t${current.requestId}\t${level.name}\t${util.format(...params)}`;
  process.stdout.write(line.replace(/\n/g, "\r") + "\n");
}

function patchConsole() {
  const min = LEVELS[process.env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? LEVELS.TRACE;
  const at = (level) => (level.priority >= min.priority ? (...p) => writeLog(level, ...p) : () => {});
  console.trace = at(LEVELS.TRACE);
  console.debug = at(LEVELS.DEBUG);
  console.info = at(LEVELS.INFO);
  console.log = console.info;
  console.warn = at(LEVELS.WARN);
  console.error = at(LEVELS.ERROR);
  console.fatal = (...p) => writeLog(LEVELS.FATAL, ...p);
}

function logError(msg, err) {
  if (JSON_FORMAT) console.error(intoError(err));
  else console.error(msg, toFormatted(intoError(err)));
}

// ------------------------------------------------------------------ the Runtime API

/** Reads HTTP/1.1 responses (Content-Length or chunked) out of the bytes received so far. */
class ResponseReader {
  constructor() {
    this.buf = Buffer.alloc(0);
  }

  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
  }

  /** The first complete response, taken out of the buffer; `null` until one is complete. */
  take() {
    const end = this.buf.indexOf("\r\n\r\n");
    if (end < 0) return null;
    const lines = this.buf.toString("latin1", 0, end).split("\r\n");
    const status = parseInt(lines[0].split(" ")[1], 10);
    const headers = {};
    for (let i = 1; i < lines.length; i++) {
      const c = lines[i].indexOf(":");
      if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
    }
    let body;
    let rest = end + 4;
    if ((headers["transfer-encoding"] || "").toLowerCase() === "chunked") {
      const chunks = [];
      for (;;) {
        const eol = this.buf.indexOf("\r\n", rest);
        if (eol < 0) return null;
        const size = parseInt(this.buf.toString("latin1", rest, eol).split(";")[0], 16);
        if (size === 0) {
          // Then the trailers, if any, and an empty line.
          const t = this.buf.indexOf("\r\n\r\n", eol);
          if (t < 0) return null;
          rest = t + 4;
          break;
        }
        if (this.buf.length < eol + 2 + size + 2) return null;
        chunks.push(this.buf.subarray(eol + 2, eol + 2 + size));
        rest = eol + 2 + size + 2;
      }
      body = Buffer.concat(chunks);
    } else {
      const length = parseInt(headers["content-length"] || "0", 10);
      if (this.buf.length < rest + length) return null;
      body = Buffer.from(this.buf.subarray(rest, rest + length));
      rest += length;
    }
    this.buf = this.buf.subarray(rest);
    const close = (headers.connection || "").toLowerCase() === "close";
    return { status, headers, body, close };
  }
}

const CLOSED = () => new Error("the Runtime API closed the connection");

/** The connection the sandbox's init opened: a blocking socket, written with `fs.writeSync` and
 * read with `fs.read` (on libuv's thread pool, so a long-polling `next` blocks no JavaScript).
 * Nothing of it is pending between exchanges, so it never keeps the event loop alive. */
class FdConnection {
  constructor(fd) {
    this.fd = fd;
    this.reader = new ResponseReader();
    this.busy = false;
    this.closed = false;
  }

  /** fd `n` from the init, if the environment names it and it is a socket. */
  static inherited() {
    const fd = parseInt(process.env._QUARTERS_RUNTIME_API_FD, 10);
    delete process.env._QUARTERS_RUNTIME_API_FD;
    try {
      return fd > 2 && fs.fstatSync(fd).isSocket() ? new FdConnection(fd) : null;
    } catch (_) {
      return null;
    }
  }

  send(request) {
    return new Promise((resolve, reject) => {
      const fail = (err) => {
        this.close();
        reject(err);
      };
      try {
        for (let off = 0; off < request.length; ) off += fs.writeSync(this.fd, request, off);
      } catch (err) {
        return fail(err);
      }
      const more = () =>
        fs.read(this.fd, Buffer.allocUnsafe(65536), 0, 65536, null, (err, n, buf) => {
          if (err) return fail(err);
          if (n === 0) return fail(CLOSED());
          this.reader.push(buf.subarray(0, n));
          const r = this.reader.take();
          if (r === null) return more();
          if (r.close) this.close();
          resolve(r);
        });
      more();
    });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch (_) {}
  }
}

/** A connection of our own, for when the inherited one is busy or gone. Unreferenced while idle,
 * as `http.Agent` does with its kept-alive sockets. */
class NetConnection {
  constructor(host, port) {
    this.socket = require("net").connect({ host, port, noDelay: true });
    this.reader = new ResponseReader();
    this.pending = null;
    this.busy = false;
    this.closed = false;
    this.socket.on("data", (chunk) => {
      this.reader.push(chunk);
      const p = this.pending;
      const r = p && this.reader.take();
      if (!r) return;
      this.pending = null;
      if (r.close) this.close();
      this.socket.unref();
      p.resolve(r);
    });
    const fail = (err) => {
      this.closed = true;
      const p = this.pending;
      this.pending = null;
      if (p) p.reject(err || CLOSED());
    };
    this.socket.on("error", fail);
    this.socket.on("close", () => fail());
  }

  send(request) {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket.ref();
      this.socket.write(request);
    });
  }

  close() {
    this.closed = true;
    this.socket.destroy();
  }
}

class RuntimeApi {
  constructor(address) {
    const i = address.lastIndexOf(":");
    this.host = address.slice(0, i);
    this.port = parseInt(address.slice(i + 1), 10);
    this.conns = [];
    const inherited = FdConnection.inherited();
    if (inherited) this.conns.push(inherited);
  }

  /** One exchange on an idle kept-alive connection, or a new one if none is (say a long-polling
   * `next` holds it while an uncaught exception is reported). A kept-alive connection that turns
   * out closed is retried once on a new one. */
  async request(method, p, body, headers) {
    let head = `${method} ${API}${p} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n`;
    // Header values are the function's (an error's name): printable ASCII only, on one line.
    for (const [k, v] of Object.entries(headers || {})) head += `${k}: ${String(v).replace(/[^\x20-\x7e]/g, "")}\r\n`;
    const payload = body === undefined ? undefined : Buffer.from(body, "utf8");
    if (payload !== undefined) head += `Content-Length: ${payload.length}\r\n`;
    const request = Buffer.concat([Buffer.from(head + "\r\n", "latin1"), payload || Buffer.alloc(0)]);
    for (let attempt = 0; ; attempt++) {
      this.conns = this.conns.filter((c) => !c.closed);
      let conn = attempt === 0 ? this.conns.find((c) => !c.busy) : undefined;
      const reused = conn !== undefined;
      if (!reused) {
        conn = new NetConnection(this.host, this.port);
        this.conns.push(conn);
      }
      conn.busy = true;
      try {
        return await conn.send(request);
      } catch (err) {
        conn.close();
        if (!reused) throw err;
      } finally {
        conn.busy = false;
      }
    }
  }

  async next() {
    for (;;) {
      const r = await this.request("GET", "/invocation/next");
      if (r.status === 200) return r;
    }
  }

  post(p, value, extra) {
    let body;
    try {
      body = JSON.stringify(value === undefined ? null : value);
    } catch (_) {
      throw new Error("Unable to stringify response body");
    }
    const headers = Object.assign({ "Content-Type": "application/json" }, extra);
    return this.request("POST", p, body, headers);
  }

  respond(id, result) {
    return this.post(`/invocation/${encodeURIComponent(id)}/response`, result);
  }

  error(id, err) {
    const body = toRapidResponse(err);
    return this.post(`/invocation/${encodeURIComponent(id)}/error`, body, { [ERROR_TYPE_HEADER]: body.errorType });
  }

  initError(err) {
    const body = toRapidResponse(err);
    return this.post("/init/error", body, { [ERROR_TYPE_HEADER]: body.errorType });
  }
}

// ------------------------------------------------------------------ the handler

function splitHandler(full) {
  if (full.includes("..")) {
    throw new MalformedHandlerName(
      `'${full}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const base = path.basename(full);
  const moduleRoot = full.substring(0, full.indexOf(base));
  const m = base.match(/^([^.]*)\.(.*)$/);
  if (!m) throw new MalformedHandlerName("Bad handler");
  return [moduleRoot, m[1], m[2]];
}

function packageTypeIsModule(dir) {
  if (dir.endsWith("/node_modules")) return false;
  const pj = path.join(dir, "package.json");
  if (fs.existsSync(pj)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(pj));
      if (pkg) return pkg.type === "module";
    } catch (e) {
      console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
      return false;
    }
  }
  return dir === "/" ? false : packageTypeIsModule(path.resolve(dir, ".."));
}

function tryRequire(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function tryImport(file) {
  return fs.existsSync(file) ? await import(file) : undefined;
}

async function loadModule(appRoot, moduleRoot, name) {
  const base = path.resolve(appRoot, moduleRoot, name);
  const bare = tryRequire(base);
  if (bare) return bare;
  const esm = fs.existsSync(base + ".js") && packageTypeIsModule(path.dirname(base + ".js"));
  if (!esm) {
    const cjs = tryRequire(base + ".js");
    if (cjs) return cjs;
  }
  const loaded = (esm && (await tryImport(base + ".js"))) || (await tryImport(base + ".mjs")) || tryRequire(base + ".cjs");
  if (loaded) return loaded;
  return require(require.resolve(name, { paths: [appRoot, moduleRoot] }));
}

async function loadHandler(appRoot, full) {
  const [moduleRoot, name, handlerPath] = splitHandler(full);
  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, name);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e.code === "MODULE_NOT_FOUND") throw new ImportModuleError(e);
    throw e;
  }
  const fn = handlerPath.split(".").reduce((o, k) => o && o[k], app);
  if (!fn) throw new HandlerNotFound(`${full} is undefined or not exported`);
  if (typeof fn !== "function") throw new HandlerNotFound(`${full} is not a function`);
  return fn;
}

// ------------------------------------------------------------------ the loop

const onBeforeExit = { listener: () => {} };
process.on("beforeExit", () => onBeforeExit.listener());

const errorCallbacks = {};

function parseJson(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function buildContext(api, id, headers, next) {
  let waitForEmptyEventLoop = true;
  let completed = false;
  let finished = false;
  const complete = (result) => {
    if (completed) {
      console.error(
        "Invocation has already been reported as done. Cannot call complete more than once per invocation.",
      );
      return;
    }
    completed = true;
    api.respond(id, result).then(next, fatal);
  };
  const postError = (err) => {
    logError("Invoke Error", err);
    api.error(id, err).then(next, fatal);
  };
  const done = (err, result) => {
    onBeforeExit.listener = () => {};
    if (err !== undefined && err !== null) postError(err);
    else complete(result);
  };
  const once = (f) =>
    function (...args) {
      if (!finished) {
        finished = true;
        f(...args);
      }
    };
  const callback = once((err, result) => {
    onBeforeExit.listener = () => {};
    if (err !== undefined && err !== null) postError(err);
    else if (!waitForEmptyEventLoop) complete(result);
    else onBeforeExit.listener = () => setImmediate(() => complete(result));
  });
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(v) {
      waitForEmptyEventLoop = v;
    },
    succeed: once((result) => done(null, result)),
    fail: once((err) => (err === undefined || err === null ? done("handled") : done(err, null))),
    done: once(done),
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJson(headers["lambda-runtime-client-context"], "ClientContext"),
    identity: parseJson(headers["lambda-runtime-cognito-identity"], "CognitoIdentity"),
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    awsRequestId: id,
    tenantId: headers["lambda-runtime-aws-tenant-id"],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
  const markCompleted = () => {
    completed = true;
  };
  return [callback, context, markCompleted];
}

function fatal(err) {
  console.log(`Unexpected Top Level Error: ${err && err.toString()}`);
  process.exit(1);
}

/** Holds the handler, which is called as its method (stack frames read `Runtime.handler`, as on Lambda). */
class Runtime {
  constructor(handler) {
    this.handler = handler;
  }
}

async function handleOnce(api, runtime) {
  const r = await api.next();
  const headers = r.headers;
  const id = headers["lambda-runtime-aws-request-id"];
  current.requestId = id;
  current.tenantId = headers["lambda-runtime-aws-tenant-id"];
  if (headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"];
  else delete process.env._X_AMZN_TRACE_ID;
  const next = () => setImmediate(() => handleOnce(api, runtime).catch(fatal));
  errorCallbacks.uncaughtException = (error) => api.error(id, error).finally(() => process.exit(129));
  errorCallbacks.unhandledRejection = (error) => api.error(id, error).finally(() => process.exit(128));
  let callback;
  try {
    const built = buildContext(api, id, headers, next);
    callback = built[0];
    const context = built[1];
    const markCompleted = built[2];
    onBeforeExit.listener = () => {
      markCompleted();
      api.respond(id, null).then(next, fatal);
    };
    const event = JSON.parse(r.body.toString("utf8"));
    const result = runtime.handler(event, context, callback);
    if (result && typeof result.then === "function") {
      result.then(context.succeed, context.fail).catch(context.fail);
    }
  } catch (err) {
    if (callback) callback(err);
    else {
      logError("Invoke Error", err);
      api.error(id, err).then(next, fatal);
    }
  }
}

async function main() {
  patchConsole();
  const api = new RuntimeApi(process.env.AWS_LAMBDA_RUNTIME_API || "127.0.0.1:9001");
  errorCallbacks.uncaughtException = (error) => api.initError(error).finally(() => process.exit(129));
  errorCallbacks.unhandledRejection = (error) => api.initError(error).finally(() => process.exit(128));
  process.on("uncaughtException", (error) => {
    logError("Uncaught Exception", error);
    errorCallbacks.uncaughtException(error);
  });
  process.on("unhandledRejection", (reason, promise) => {
    const error = new UnhandledPromiseRejection(reason, promise);
    logError("Unhandled Promise Rejection", error);
    errorCallbacks.unhandledRejection(error);
  });
  globalThis.awslambda = globalThis.awslambda || {
    streamifyResponse: (handler) => handler,
  };
  let handler;
  try {
    handler = await loadHandler(process.env.LAMBDA_TASK_ROOT || "/var/task", process.env._HANDLER || "");
  } catch (error) {
    logError("Uncaught Exception", error);
    await api.initError(error).catch(() => {});
    process.exit(129);
  }
  const runtime = new Runtime(handler);
  setImmediate(() => handleOnce(api, runtime).catch(fatal));
}

main();
