"""The layer's server: an HTTP proxy in front of moto that applies AWS's rules.

A request is read whole, its service found from the SigV4 credential scope
(``Credential=AKID/DATE/REGION/SERVICE/aws4_request``), its action from the
form (query protocols: ec2, iam, sts) or the X-Amz-Target header (JSON:
servicequotas). Rule modules register hooks per (service, action):

* ``before(call)`` may answer the call itself (return a ``Reply``, an AWS
  error for instance) or change ``call.form`` before it goes to moto;
* ``after(call, reply)`` may change moto's answer or record state.

Everything else goes to moto byte for byte. Errors are written in AWS's own
shape for the protocol, so botocore parses ``Error.Code`` as from AWS.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import switches

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
ADMIN_KEY = "localcloud"  # what localcloud.moto.aws_env exports: the account root
SCOPE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")
# Hop-by-hop headers are the proxy's own business, not moto's. Host passes as the
# client sent it (moto builds some answers from it).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-connection", "content-length"}


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One signed AWS request, as the rules see it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    service: str
    region: str
    access_key: str
    action: str
    protocol: str = "query"  # "ec2", "query" (iam, sts) or "json" (servicequotas)
    form: dict[str, str] = field(default_factory=dict)  # query protocols
    json_body: dict[str, Any] = field(default_factory=dict)  # JSON protocol
    caller: Any = None  # iam.Caller, set by the IAM rule
    notes: dict[str, Any] = field(default_factory=dict)  # what before() tells after()

    @property
    def is_root(self) -> bool:
        return self.access_key == ADMIN_KEY

    def params(self) -> dict[str, Any]:
        """The EC2 request as boto3 would have been given it (unflattened by the model)."""
        if "params" not in self.notes:
            self.notes["params"] = ec2_params(self.action, self.form)
        return self.notes["params"]


class AwsError(Exception):
    """An error AWS would answer; the server writes it in the call's protocol."""

    def __init__(self, code: str, message: str, status: int = 400,
                 sender: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.sender = code, message, status, sender


Hook = Callable[..., Any]
BEFORE: dict[tuple[str, str], list[Hook]] = {}
AFTER: dict[tuple[str, str], list[Hook]] = {}
# Hooks for every call (authentication, account switches), run first; and after
# every call that moto answered, whatever its action.
GUARDS: list[Hook] = []
AFTER_ANY: list[Hook] = []
# The layer's own API for the local cloud's tools (unsigned POST /localcloud-awslayer/NAME
# with a JSON body): what AWS does by itself, such as a spot interruption.
INTERNAL: dict[str, Hook] = {}
INTERNAL_PREFIX = "/localcloud-awslayer/"


def before(service: str, *actions: str) -> Callable[[Hook], Hook]:
    def register(func: Hook) -> Hook:
        for action in actions:
            BEFORE.setdefault((service, action), []).append(func)
        return func
    return register


def after(service: str, *actions: str) -> Callable[[Hook], Hook]:
    def register(func: Hook) -> Hook:
        for action in actions:
            AFTER.setdefault((service, action), []).append(func)
        return func
    return register


def request_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- error shapes

def error_reply(call: Call, error: AwsError) -> Reply:
    """The error in the shape AWS uses for the call's protocol."""
    rid = request_id()
    if call.service == "ec2":
        # EC2 query protocol: <Response><Errors><Error>... with RequestID.
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{_esc(error.code)}</Code><Message>{_esc(error.message)}</Message>"
                f"</Error></Errors><RequestID>{rid}</RequestID></Response>")
        return Reply(error.status, body.encode(), {"Content-Type": "text/xml;charset=UTF-8"})
    if call.protocol == "json":
        # JSON 1.1 (servicequotas): __type and message; the type names the error.
        body = json.dumps({"__type": error.code, "message": error.message})
        return Reply(error.status, body.encode(),
                     {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": rid})
    # IAM and STS query protocol: ErrorResponse with Type Sender/Receiver.
    kind = "Sender" if error.sender else "Receiver"
    body = (f'<ErrorResponse xmlns="https://{call.service}.amazonaws.com/doc/'
            f'{_query_version(call.service)}/"><Error><Type>{kind}</Type>'
            f"<Code>{_esc(error.code)}</Code><Message>{_esc(error.message)}</Message></Error>"
            f"<RequestId>{rid}</RequestId></ErrorResponse>")
    return Reply(error.status, body.encode(), {"Content-Type": "text/xml"})


def _query_version(service: str) -> str:
    return {"iam": "2010-05-08", "sts": "2011-06-15"}.get(service, "2010-05-08")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_reply(data: dict[str, Any]) -> Reply:
    return Reply(200, json.dumps(data, default=_json_default).encode(),
                 {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id()})


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    raise TypeError(value)


# ------------------------------------------------- EC2 query <-> boto3 shapes

_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def service_model(name: str):
    with _models_lock:
        if name not in _models:
            import botocore.session

            _models[name] = botocore.session.get_session().get_service_model(name)
        return _models[name]


def _query_name(member: str, shape) -> str:
    # botocore's EC2Serializer: queryName, else locationName capitalised, else the member.
    if "queryName" in shape.serialization:
        return shape.serialization["queryName"]
    if "name" in shape.serialization:
        name = shape.serialization["name"]
        return name[0].upper() + name[1:]
    return member


def ec2_params(action: str, form: dict[str, str]) -> dict[str, Any]:
    """Unflatten an EC2 query form into the structure boto3 takes (inverse of botocore)."""
    try:
        shape = service_model("ec2").operation_model(action).input_shape
    except Exception:
        return {}
    prefixes = set()
    for key in form:
        parts = key.split(".")
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return _unflatten(shape, form, "", prefixes) or {}


def _unflatten(shape, form: dict[str, str], prefix: str, prefixes: set[str]) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for member, member_shape in shape.members.items():
            key = _query_name(member, member_shape)
            full = f"{prefix}.{key}" if prefix else key
            if full not in prefixes:
                continue
            value = _unflatten(member_shape, form, full, prefixes)
            if value is not None:
                out[member] = value
        return out
    if kind == "list":
        items, index = [], 1
        while f"{prefix}.{index}" in prefixes:
            items.append(_unflatten(shape.member, form, f"{prefix}.{index}", prefixes))
            index += 1
        return items
    raw = form.get(prefix)
    if raw is None:
        return None
    if kind in ("integer", "long"):
        return int(raw)
    if kind in ("double", "float"):
        return float(raw)
    if kind == "boolean":
        return raw.lower() == "true"
    return raw


def ec2_form(action: str, params: dict[str, Any]) -> dict[str, str]:
    """Flatten boto3-shaped params into an EC2 query form (botocore's own serializer)."""
    from botocore.serialize import EC2Serializer

    op = service_model("ec2").operation_model(action)
    body = EC2Serializer().serialize_to_request(params, op)["body"]
    return {k: str(v) for k, v in body.items()}


def to_xml(shape, value: Any, tag: str, protocol: str = "ec2") -> ET.Element:
    """An answer element for value, named as the model names it (inverse of botocore's parser).

    EC2 names members by their locationName (camelCase) and list items
    ``item``; the query protocol (IAM, STS) by the member name and ``member``.
    """
    elem = ET.Element(tag)
    kind = shape.type_name
    if kind == "structure":
        for member, member_shape in shape.members.items():
            if member in value and value[member] is not None:
                default = member[0].lower() + member[1:] if protocol == "ec2" else member
                name = member_shape.serialization.get("name", default)
                elem.append(to_xml(member_shape, value[member], name, protocol))
    elif kind == "list":
        item = "item" if protocol == "ec2" else shape.member.serialization.get("name", "member")
        for entry in value:
            elem.append(to_xml(shape.member, entry, item, protocol))
    elif kind == "timestamp":
        when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
        elem.text = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    elif kind == "boolean":
        elem.text = "true" if value else "false"
    else:
        elem.text = str(value)
    return elem


def ec2_answer(action: str, data: dict[str, Any]) -> Reply:
    """A whole EC2 answer for an action the layer serves itself."""
    shape = service_model("ec2").operation_model(action).output_shape
    root = to_xml(shape, data, f"{action}Response")
    root.set("xmlns", EC2_NS.rstrip("/") + "/")
    rid = ET.Element("requestId")
    rid.text = request_id()
    root.insert(0, rid)
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)
    return Reply(200, body, {"Content-Type": "text/xml;charset=UTF-8"})


def query_answer(service: str, action: str, data: dict[str, Any]) -> Reply:
    """A whole IAM/STS answer: <ActionResponse><ActionResult>…</ActionResult><ResponseMetadata>."""
    shape = service_model(service).operation_model(action).output_shape
    root = ET.Element(f"{action}Response",
                      {"xmlns": f"https://{service}.amazonaws.com/doc/{_query_version(service)}/"})
    root.append(to_xml(shape, data, f"{action}Result", "query"))
    meta = ET.SubElement(root, "ResponseMetadata")
    ET.SubElement(meta, "RequestId").text = request_id()
    return Reply(200, xml_bytes(root), {"Content-Type": "text/xml"})


def parse_xml(body: bytes) -> ET.Element:
    """An answer's tree with plain tag names; its namespace kept as the root's xmlns."""
    root = ET.fromstring(body)  # noqa: S314 (moto's answers on 127.0.0.1, not outside data)
    namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else None
    for node in root.iter():
        if node.tag.startswith("{"):
            node.tag = node.tag.split("}", 1)[1]
    if namespace:
        root.set("xmlns", namespace)
    return root


def xml_bytes(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def q(name: str) -> str:
    """An answer's element name as parse_xml leaves it (kept for the rules' readability)."""
    return name


# ---------------------------------------------------------- moto, internally

class Moto:
    """The layer's own way into moto: raw forwarding and boto3 clients (root key)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str, region: str):
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                import boto3
                from botocore.config import Config

                self._clients[key] = boto3.session.Session().client(
                    service, region_name=region, endpoint_url=self.endpoint,
                    aws_access_key_id=ADMIN_KEY, aws_secret_access_key=ADMIN_KEY,
                    config=Config(retries={"max_attempts": 1}),
                )
            return self._clients[key]

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
            sent["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=sent)
            answer = conn.getresponse()
            data = answer.read()
            kept = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_HEADERS}
            return Reply(answer.status, data, kept)
        finally:
            conn.close()


# ------------------------------------------------------------------ the server

class Layer:
    """What the handler threads share: moto, the state dir, the rules' memory."""

    def __init__(self, moto_port: int, state_dir: Path) -> None:
        self.moto = Moto(moto_port)
        self.state_dir = state_dir
        self.memory: dict[str, Any] = {}  # rule modules keep their records here
        self.lock = threading.RLock()
        # localcloud.instances.Instances when instances are boxes (the local cloud;
        # the layer's unit tests may leave it out or give a stand-in).
        self.instances: Any = None

    def switches(self) -> dict[str, Any]:
        return switches.read(self.state_dir)

    def reset(self) -> None:
        with self.lock:
            self.memory.clear()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        started = time.monotonic()
        reply = self._handle(method, path, headers, body)
        if self.switches().get("trace"):
            # A line per call in awslayer.log: what the launch's time went to.
            call = self.parse(method, path, headers, body)
            print(f"{time.strftime('%H:%M:%S')} {call.service if call else '-'} "
                  f"{call.action if call else path} {reply.status} "
                  f"{(time.monotonic() - started) * 1000:.0f} ms", file=sys.stderr, flush=True)
        return reply

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path.startswith(INTERNAL_PREFIX):
            reply = self.internal(path[len(INTERNAL_PREFIX):], body)
            if self.instances is not None:
                self.instances.kick.set()  # EC2 acted by itself: the boxes follow
            return reply
        call = self.parse(method, path, headers, body)
        if self.instances is None or call is None or call.service != "ec2":
            return self._answer(call, method, path, headers, body)
        with self.instances.call_in_flight(call.action):
            reply = self._answer(call, method, path, headers, body)
            self.tell_instances(call, reply)
        return reply

    def tell_instances(self, call: Call, reply: Reply) -> None:
        """Let the boxes follow an EC2 call moto answered (strict or lenient alike)."""
        from botocore.parsers import create_parser

        if call.action not in self.instances.ACTIONS or reply.status >= 300:
            return
        try:
            shape = service_model("ec2").operation_model(call.action).output_shape
            answer = create_parser("ec2").parse(
                {"body": reply.body, "headers": reply.headers, "status_code": reply.status},
                shape) if shape is not None else {}
            self.instances.after_call(call.action, call.region, call.params(), reply.status,
                                      answer)
        except Exception:
            # The call itself succeeded in moto; its box is the local cloud's fault.
            traceback.print_exc()

    def _answer(self, call: Call | None, method: str, path: str, headers: dict[str, str],
                body: bytes) -> Reply:
        if path.startswith("/moto-api/reset"):
            self.reset()
        if call is None or not self.switches().get("strict", True):
            return self.moto.forward(method, path, headers, body)
        try:
            for guard in GUARDS:
                guard(self, call)
            for hook in BEFORE.get((call.service, call.action), []):
                answer = hook(self, call)
                if answer is not None:
                    return answer
            if call.notes.get("form_changed"):
                body = urllib.parse.urlencode(call.form).encode()
            reply = self.moto.forward(method, path, headers, body)
            for hook in AFTER_ANY:
                hook(self, call, reply)
            if reply.status < 300:
                for hook in AFTER.get((call.service, call.action), []):
                    reply = hook(self, call, reply) or reply
            return reply
        except AwsError as error:
            return error_reply(call, error)
        except Exception as error:
            # A fault of the layer: said in the protocol's shape, so the client names it
            # (botocore would only report unparsable XML), and logged with its traceback.
            traceback.print_exc()
            return error_reply(call, AwsError(
                "InternalError", f"localcloud awslayer: {type(error).__name__}: {error}", 500,
                sender=False))

    def internal(self, name: str, body: bytes) -> Reply:
        func = INTERNAL.get(name)
        if func is None:
            return Reply(404, json.dumps({"error": f"no layer API {name}"}).encode(),
                         {"Content-Type": "application/json"})
        try:
            answer = func(self, json.loads(body or b"{}"))
        except (AwsError, KeyError, ValueError) as error:
            return Reply(400, json.dumps({"error": str(error)}).encode(),
                         {"Content-Type": "application/json"})
        return Reply(200, json.dumps(answer, default=str).encode(),
                     {"Content-Type": "application/json"})

    @staticmethod
    def parse(method: str, path: str, headers: dict[str, str], body: bytes) -> Call | None:
        match = SCOPE.search(headers.get("authorization", ""))
        if not match:
            return None  # unsigned: moto's own API (/moto-api/...), passes untouched
        access_key, _, region, service = match.groups()
        call = Call(method, path, headers, body, service, region, access_key, action="")
        target = headers.get("x-amz-target")
        if target:
            call.action = target.rsplit(".", 1)[-1]
            call.protocol = "json"
            try:
                call.json_body = json.loads(body or b"{}")
            except ValueError:
                call.json_body = {}
            return call
        call.protocol = "ec2" if service == "ec2" else "query"
        content_type = headers.get("content-type", "")
        if method == "POST" and "x-www-form-urlencoded" in content_type:
            call.form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        else:
            query = urllib.parse.urlsplit(path).query
            call.form = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        call.action = call.form.get("Action", "")
        return call


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    layer: Layer  # set on the subclass by serve()

    def _any(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.layer.handle(self.command, self.path, headers, body)
        except Exception as error:  # a layer bug must not look like a hang
            reply = Reply(500, f"localcloud awslayer: {type(error).__name__}: {error}".encode(),
                          {"Content-Type": "text/plain"})
            self.log_error("layer failure on %s: %r", self.path, error)
        # moto's own Date and Server headers pass; the layer's answers get a Date.
        self.send_response_only(reply.status)
        if not any(key.lower() == "date" for key in reply.headers):
            self.send_header("Date", self.date_time_string())
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _read_chunked(self) -> bytes:
        """A chunked request body, whole (moto gets it with a Content-Length)."""
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass  # moto logs each request already


def make_server(port: int, moto_port: int, state_dir: Path,
                boxes: bool = False) -> ThreadingHTTPServer:
    """The layer on 127.0.0.1:port (0: a free one). boxes: every instance is a real box
    (localcloud.instances), as in the local cloud; the layer's unit tests leave it out."""
    from . import load_rules

    load_rules()
    layer = Layer(moto_port, state_dir)
    handler = type("BoundHandler", (Handler,), {"layer": layer})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.layer = layer  # type: ignore[attr-defined]
    if boxes:
        from .boxes import instances_for

        layer.instances = instances_for(layer, server.server_address[1])
        layer.instances.start()
    return server


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

