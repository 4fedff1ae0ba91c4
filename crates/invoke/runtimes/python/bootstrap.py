"""Quarters' Python runtime: the loop between the Runtime API and a handler `file.function`.

It runs on the host's interpreter, inside the environment's sandbox, with the standard library
only, and behaves as AWS's runtime interface client (awslambdaric) does: the same handler
resolution and error types, the same context object, the same error bodies and log lines.
tests/e2e/test_runtimes.py runs the same functions under both and compares them.

It starts on what a bare `python3 -c pass` has already loaded, plus three C modules: `json`,
`logging` and `traceback` (with `re`, `enum`, `linecache`, ...) would cost a cold start 15-25 ms.
JSON goes through `_json`'s C scanner and encoder (the ones `json.loads` and `json.dumps` use),
`logging` is configured when the function imports it (as awslambdaric's would be by then), and
`traceback` is imported when an error is reported.
"""

import _socket
import os
import sys
import time

RUNTIME_API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
API = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
JSON_FORMAT = (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"
ERROR_LOG_LINE_TERMINATE = "\r"
ERROR_LOG_IDENT = "\u00a0"
UNHANDLED_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime version, "
    "you may be able to mitigate this error by temporarily rolling back to the previous runtime version. "
    "For more information, see https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r"
)
# Attributes of a LogRecord that are not user `extra=` fields.
RESERVED_RECORD_FIELDS = {
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module", "exc_info",
    "exc_text", "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
    "threadName", "processName", "process", "aws_request_id", "tenant_id", "taskName",
}

_request_id = None
_tenant_id = None


class Fault(Exception):
    def __init__(self, error_type, msg, trace=None):
        super().__init__(msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace


class Unbuffered:
    """print() output reaches the log at once, as on Lambda."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, attr):
        return getattr(self.stream, attr)

    def write(self, msg):
        self.stream.write(msg)
        self.stream.flush()

    def writelines(self, msgs):
        self.stream.writelines(msgs)
        self.stream.flush()


# ---------------------------------------------------------------- the Runtime API


class RuntimeApi:
    """HTTP/1.1 over one kept-alive socket. The C `_socket` module directly: `http.client` costs
    ~40 ms of imports at start, `socket` alone ~10 ms."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.buf = b""

    def _connect(self):
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.buf = b""

    def _read_until(self, sep):
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the Runtime API closed the connection")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(sep)
        return head

    def _read_exactly(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("the Runtime API closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _exchange(self, method, path, body, headers):
        lines = ["%s %s%s HTTP/1.1" % (method, API, path), "Host: %s:%d" % self.address]
        for k, v in headers.items():
            lines.append("%s: %s" % (k, v))
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        out = Headers()
        for line in head[1:]:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
        if out.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                data += self._read_exactly(size)
                self._read_exactly(2)
        else:
            data = self._read_exactly(int(out.get("Content-Length", "0")))
        if out.get("Connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return status, data, out

    def call(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                return self._exchange(method, path, body, headers or {})
            except OSError:
                # A kept-alive connection the server closed: open a new one, once.
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                if attempt:
                    raise

    def next(self):
        while True:
            status, body, headers = self.call("GET", "/invocation/next")
            if status == 200:
                return body, headers

    def respond(self, request_id, body, content_type):
        self.call("POST", "/invocation/%s/response" % request_id, body, {"Content-Type": content_type})

    def error(self, request_id, error):
        self.call(
            "POST",
            "/invocation/%s/error" % request_id,
            to_json(error).encode("utf-8"),
            {"Content-Type": "application/json", ERROR_TYPE_HEADER: error["errorType"]},
        )

    def init_error(self, error):
        self.call(
            "POST",
            "/init/error",
            to_json(error).encode("utf-8"),
            {"Content-Type": "application/json", ERROR_TYPE_HEADER: error["errorType"]},
        )


class Headers(dict):
    """Response headers, looked up without regard to case."""

    def __setitem__(self, k, v):
        super().__setitem__(k.lower(), v)

    def get(self, k, default=None):
        return super().get(k.lower(), default)


# ---------------------------------------------------------------- marshalling


def _default(obj):
    import decimal

    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def dumps(obj, default, ensure_ascii):
    """`json.dumps(obj, default=default, ensure_ascii=ensure_ascii)`, through the same C encoder
    it uses (with `indent=None`), without importing `json`."""
    if _json is None:
        import json

        return json.dumps(obj, default=default, ensure_ascii=ensure_ascii)
    encode = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    # A new markers dict per call (check_circular): an earlier failure may have left ids in one.
    return "".join(_json.make_encoder({}, default, encode, None, ": ", ", ", False, False, True)(obj, 0))


def to_json(obj):
    return dumps(obj, _default, _ENSURE_ASCII)


# Lambda's python3.12 and later emit non-ASCII characters as they are.
_ENSURE_ASCII = os.environ.get("AWS_EXECUTION_ENV") not in {
    "AWS_Lambda_python3.12",
    "AWS_Lambda_python3.13",
    "AWS_Lambda_python3.14",
}


class _DecodeContext:
    """What `_json.make_scanner` reads from a `json.JSONDecoder()` with default arguments."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def _c_json():
    """`_json` and a scanner, if this interpreter's C accelerator takes the arguments `json`'s
    own modules give it (checked once here, so that a different one only costs speed)."""
    try:
        import _json

        scan = _json.make_scanner(_DecodeContext())
        enc = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        probe = '{"a": [1.5, "\\u00e9"]}'
        if scan(probe, 0) == ({"a": [1.5, "\u00e9"]}, len(probe)) and "".join(enc({"a": None}, 0)) == '{"a": null}':
            return _json, scan
    except Exception:
        pass
    return None, None


_json, _scan_once = _c_json()
_JSON_WHITESPACE = " \t\n\r"


def loads(doc):
    """`json.loads(doc)` for a `str` or a UTF-8 document, through the same C scanner. Anything
    else (a BOM, UTF-16 or UTF-32, a malformed document) goes to `json.loads` itself, for its
    result or its exact error."""
    try:
        if _scan_once is None:
            s = None
        elif isinstance(doc, str):
            s = doc
        elif doc[:3] != b"\xef\xbb\xbf" and b"\x00" not in doc[:4]:
            s = doc.decode("utf-8", "surrogatepass")
        else:
            s = None
        if s is not None and not s.startswith("\ufeff"):
            obj, end = _scan_once(s, len(s) - len(s.lstrip(_JSON_WHITESPACE)))
            if not s[end:].lstrip(_JSON_WHITESPACE):
                return obj
    except Exception:
        pass
    import json

    return json.loads(doc)


def unmarshal(body, content_type):
    if content_type != "application/json":
        return body
    try:
        return loads(body)
    except Exception as e:
        raise Fault("Runtime.UnmarshalError", "Unable to unmarshal input: {}".format(e))


def marshal(response):
    if isinstance(response, bytes):
        return response, "application/unknown"
    try:
        return to_json(response).encode("utf-8"), "application/json"
    except Exception as e:
        raise Fault("Runtime.MarshalError", "Unable to marshal response: {}".format(e))


# ---------------------------------------------------------------- the context object


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]


class Client:
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]


class ClientContext:
    __slots__ = ["custom", "env", "client"]


def _obj(cls, d):
    if d is None:
        return None
    o = cls()
    for field in cls.__slots__:
        setattr(o, field, d.get(field))
    return o


def _parse_header(value, name):
    try:
        return loads(value)
    except Exception as e:
        raise Fault("Runtime.LambdaContextUnmarshalError", "Unable to parse {} JSON: {}".format(name, e))


class LambdaContext:
    def __init__(self, request_id, client_context, identity, deadline_ms, arn, tenant_id):
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = arn
        self.tenant_id = tenant_id
        self.client_context = _obj(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj(Client, self.client_context.client)
        self.identity = _obj(CognitoIdentity, {})
        if identity is not None:
            self.identity.cognito_identity_id = identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        left = self._deadline_ms - int(time.time() * 1000)
        return left if left > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id={0.aws_request_id},log_group_name={0.log_group_name},"
            "log_stream_name={0.log_stream_name},function_name={0.function_name},"
            "memory_limit_in_mb={0.memory_limit_in_mb},function_version={0.function_version},"
            "invoked_function_arn={0.invoked_function_arn},client_context={0.client_context},"
            "identity={0.identity},tenant_id={0.tenant_id}])".format(self)
        )


# ---------------------------------------------------------------- errors and logs


def make_error(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def user_frames(tb):
    """The traceback without this runtime's own frames."""
    import traceback

    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i, frame in enumerate(frames):
        if "/bootstrap.py" not in frame[0]:
            return frames[i:]
    return frames


def fault_of(exc_info, request_id=None):
    import traceback

    etype, value, tb = exc_info
    return make_error(str(value), etype.__name__, traceback.format_list(user_frames(tb)), request_id)


def _indent(line):
    n = len(line) - len(line.lstrip(" "))
    return ERROR_LOG_IDENT * n + line[n:]


def log_error(error):
    if JSON_FORMAT:
        record = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "level": "ERROR",
            **error,
        }
        sys.stdout.write(to_json(record) + "\n")
        return
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    trace = error.get("stackTrace")
    if trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in trace:
            if element == "":
                lines.append("")
            else:
                lines.extend(_indent(x) for x in element.splitlines())
    sys.stdout.write(ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")


def setup_logging(logging):
    """Give the root logger awslambdaric's handler: Lambda's line format (or JSON), the request
    and tenant ids, and AWS_LAMBDA_LOG_LEVEL."""

    class JsonFormatter(logging.Formatter):
        def __init__(self):
            super().__init__(datefmt="%Y-%m-%dT%H:%M:%SZ")

        def format(self, record):
            import traceback

            record.levelno = min(50, max(0, record.levelno)) // 10 * 10
            record.levelname = logging.getLevelName(record.levelno)
            exc = record.exc_info
            result = {
                "timestamp": self.formatTime(record, self.datefmt),
                "level": record.levelname,
                "message": record.msg if isinstance(record.msg, dict) and not record.args else record.getMessage(),
                "logger": record.name,
                "stackTrace": traceback.format_tb(exc[2]) if exc else None,
                "errorType": exc[0].__name__ if exc else None,
                "errorMessage": str(exc[1]) if exc else None,
                "requestId": getattr(record, "aws_request_id", None),
                "location": "{}:{}:{}".format(record.pathname, record.funcName, record.lineno) if exc else None,
            }
            if getattr(record, "tenant_id", None) is not None:
                result["tenantId"] = record.tenant_id
            result.update(
                (k, v) for k, v in record.__dict__.items() if k not in RESERVED_RECORD_FIELDS and k not in result
            )
            result = {k: v for k, v in result.items() if v is not None}
            return dumps(result, str, False) + "\n"

    class RequestFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id or ""
            record.tenant_id = _tenant_id
            return True

    class StdoutHandler(logging.Handler):
        def emit(self, record):
            sys.stdout.write(self.format(record))

    logging.Formatter.converter = time.gmtime
    handler = StdoutHandler()
    if JSON_FORMAT:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
    level = {None: "", "TRACE": "DEBUG"}.get(os.environ.get("AWS_LAMBDA_LOG_LEVEL"), os.environ.get("AWS_LAMBDA_LOG_LEVEL"))
    root = logging.getLogger()
    if level and level.upper() in logging._nameToLevel:
        root.setLevel(level.upper())
    handler.addFilter(RequestFilter())
    root.addHandler(handler)


class _LoggingLoader:
    """Runs `logging`'s own loader, then `setup_logging`, then steps aside (the module keeps its
    real loader)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        setup_logging(module)


class ConfigureLoggingOnImport:
    """A `sys.meta_path` finder that sees `logging` imported for the first time (by the function,
    a library it imports, or this runtime reporting an init error) and has it configured before
    the importer gets it: what the function sees is what awslambdaric, which configures logging
    at start, gives it."""

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoggingLoader(spec.loader)
                return spec
        return None


def configure_logging_when_imported():
    if "logging" in sys.modules:
        setup_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, ConfigureLoggingOnImport())


# ---------------------------------------------------------------- the handler


def import_module(name):
    """`importlib.import_module(name)` (without importing `importlib`)."""
    if name.startswith("."):
        raise TypeError("the 'package' argument is required to perform a relative import for {!r}".format(name))
    __import__(name)
    return sys.modules[name]


def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise Fault("Runtime.MalformedHandlerName", "Bad handler '{}': {}".format(handler, e))
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise Fault(
                "Runtime.BuiltInModuleConflict",
                "Cannot use built-in module {} as a handler module".format(modname),
            )
        module = import_module(modname.replace("/", "."))
    except ImportError as e:
        raise Fault("Runtime.ImportModuleError", "Unable to import module '{}': {}".format(modname, e))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise Fault("Runtime.UserCodeSyntaxError", "Syntax error in module '{}': {}".format(modname, e), trace)
    try:
        return getattr(module, fname)
    except AttributeError:
        raise Fault("Runtime.HandlerNotFound", "Handler '{}' missing on module '{}'".format(fname, modname))


def set_paths():
    """As on Lambda: the function's code first, then layers, then the runtime."""
    task = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path.pop(0)
    version = "python%d.%d" % sys.version_info[:2]
    front = [task, "/opt/python/lib/%s/site-packages" % version, "/opt/python"]
    sys.path[:0] = [p for p in front if p not in sys.path]
    sys.path.append(here)


def handle(api, handler, body, headers):
    global _request_id, _tenant_id
    request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
    _request_id = request_id
    _tenant_id = headers.get("Lambda-Runtime-Aws-Tenant-Id")
    trace = headers.get("Lambda-Runtime-Trace-Id")
    if trace is not None:
        os.environ["_X_AMZN_TRACE_ID"] = trace
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    error = None
    try:
        cc = headers.get("Lambda-Runtime-Client-Context")
        ci = headers.get("Lambda-Runtime-Cognito-Identity")
        context = LambdaContext(
            request_id,
            _parse_header(cc, "Client Context") if cc else None,
            _parse_header(ci, "Cognito Identity") if ci else None,
            int(headers.get("Lambda-Runtime-Deadline-Ms") or 0),
            headers.get("Lambda-Runtime-Invoked-Function-Arn"),
            _tenant_id,
        )
        event = unmarshal(body, headers.get("Content-Type"))
        result, content_type = marshal(handler(event, context))
    except Fault as e:
        error = make_error(e.msg, e.error_type, e.trace, request_id)
    except Exception:
        error = fault_of(sys.exc_info(), request_id)
    if error is not None:
        log_error(error)
        api.error(request_id, error)
    else:
        api.respond(request_id, result, content_type)


def main():
    sys.stdout = Unbuffered(sys.stdout)
    sys.stderr = Unbuffered(sys.stderr)
    api = RuntimeApi(RUNTIME_API)
    error = None
    try:
        set_paths()
        configure_logging_when_imported()
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except Fault as e:
        error = make_error(e.msg, e.error_type, e.trace)
    except Exception:
        error = fault_of(sys.exc_info())
    if error is not None:
        import logging

        logging.warning(UNHANDLED_WARNING)
        log_error(error)
        api.init_error(error)
        sys.exit(1)
    while True:
        body, headers = api.next()
        handle(api, handler, body, headers)


if __name__ == "__main__":
    main()
