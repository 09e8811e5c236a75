"""Hostile input over a real socket: random field values for every QuantumResources call, garbled payload JSON
for the Qiskit and Pulser simulators (with IBM's typed values, ``{"__type__": ...}``, and nesting thousands deep),
and random bytes in place of messages. Every answer must be OK or a
deliberate refusal, never UNKNOWN or INTERNAL, and the daemon (a real ``qrmid serve`` process) must stay
healthy throughout.

The hypothesis profile is derandomized with a fixed example budget, so CI runs the same inputs each time.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import signal
import subprocess
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from daemons import short_dir, wait_serving
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrmid import examples
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

settings.register_profile("fuzz", derandomize=True, max_examples=40, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FUZZ = settings.get_profile("fuzz")

REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED}
SERVICE = pb.DESCRIPTOR.services_by_name["QuantumResources"]
METHODS = {method.name: method for method in SERVICE.methods}
RESOURCES = ["local-qiskit", "local-pulser", "noop"]
CONFIG = """
[limits]
calls_per_second = 0

[tasks]
max_payload_bytes = 65536

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
slots = 1
max_qubits = 4
max_shots = 64

[[resources]]
type = "local-pulser"
name = "local-pulser"
slots = 1
max_atoms = 3
max_runs = 16

[[resources]]
type = "noop"
name = "noop"
slots = 4
"""


class Daemon:
    """A ``qrmid serve`` process, a channel to it, and ids of real tasks and leases to aim requests at."""

    def __init__(self) -> None:
        scratch = short_dir()
        self.address = f"unix:{scratch / 'qrmid.sock'}"
        config = scratch / "qrmid.toml"
        config.write_text(f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\n[journal]\npath = "{scratch / "j.db"}"\n'
                          + CONFIG)
        self.process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(config)])
        wait_serving(self.address, process=self.process)
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.QuantumResourcesStub(self.channel)
        noop = pb.Payload(pulser_sequence=pb.PulserSequence(sequence="{}", job_runs=1))
        self.task_ids = [self.stub.StartTask(pb.StartTaskRequest(resource="noop", payload=noop)).id for _ in range(3)]
        self.tokens = [self.stub.Acquire(pb.AcquireRequest(resource=name)).token for name in RESOURCES]

    def healthy(self) -> bool:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        return self.process.poll() is None and reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    served = Daemon()
    try:
        yield served
    finally:
        served.close()


def call(daemon: Daemon, method: str, request: Message | bytes, raw: bool = False) -> grpc.StatusCode:
    """Make one call (reading a few stream messages at most) and return its status code."""
    path = f"/{SERVICE.full_name}/{method}"
    descriptor = METHODS[method]
    serializer = None if raw else type(request).SerializeToString
    if descriptor.server_streaming:
        stream = daemon.channel.unary_stream(path, request_serializer=serializer)(request, timeout=30)
        try:
            for index, _ in enumerate(stream):
                if index == 2 and method == "WatchTask":
                    stream.cancel()  # a running task's watch lasts as long as the task
                    return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and method == "WatchTask":
                return grpc.StatusCode.OK
            return _refusal(exc)
        return grpc.StatusCode.OK
    try:
        daemon.channel.unary_unary(path, request_serializer=serializer)(request, timeout=30)
    except grpc.RpcError as exc:
        return _refusal(exc)
    return grpc.StatusCode.OK


def _refusal(exc: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    assert code in REFUSALS, f"{code.name}: {exc.details()}"  # type: ignore[attr-defined]
    assert exc.details(), "a refusal says why"  # type: ignore[attr-defined]
    return code


# ---- strategies ------------------------------------------------------------------------------------------

INT32 = st.sampled_from([0, 1, -1, 2**31 - 1, -2**31]) | st.integers(-2**31, 2**31 - 1)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=20)
BELL = examples.load("bell")["parameters"]["pubs"][0][0]
PULSER = examples.load("pulser")["sequence"]


@st.composite
def garbled(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters cut, replaced or inserted."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["cut", "replace", "insert"]))
        if action == "insert" or at == len(chars):
            chars.insert(at, draw(st.characters()))
        elif action == "cut":
            del chars[at]
        else:
            chars[at] = draw(st.characters())
    return "".join(chars)


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one value somewhere in it replaced by random JSON."""
    doc = copy.deepcopy(doc)
    node = doc
    while isinstance(node, (dict, list)) and node:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        if not isinstance(node[key], (dict, list)) or not node[key] or draw(st.booleans()):
            node[key] = draw(JSON)
            break
        node = node[key]
    return doc


TYPES = ["ndarray", "BitArray", "QuantumCircuit", "Instruction", "Parameter", "complex", "set", "datetime",
         "settings", "BindingsArray", "ObservablesArray", "DataBin", "Result", "spmatrix", "to_json", "NoiseModel",
         "PrimitiveResult", "SamplerPubResult", "ExecutionSpans", "unknown"]
NUMBERS = st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)


def blob(data: bytes) -> str:
    return base64.b64encode(data).decode()


def npy(shape: tuple[int, ...], dtype: str) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue() + bytes(min(int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize, 64))


def blobs() -> st.SearchStrategy[str]:
    """Base64 text that RuntimeEncoder's typed values carry: zlib'd .npy arrays (some declaring shapes far larger
    than their data), zlib'd junk, plain junk, and text that is not base64 at all."""
    shapes = st.lists(st.sampled_from([0, 1, 2, 3, 10**16, 2**62]), max_size=3).map(tuple)
    arrays = st.builds(npy, shapes, st.sampled_from(["<f8", "<i4", "|b1", "|O", "<c16"]))
    return (arrays.map(zlib.compress) | st.binary(max_size=40).map(zlib.compress) | st.binary(max_size=40)).map(blob) \
        | st.text(max_size=20)


@st.composite
def typed(draw: st.DrawFn) -> dict[str, Any]:
    """A RuntimeEncoder typed value ``{"__type__": ..., "__value__": ...}``: a known type name with a value of the
    right form or not, sometimes without its value."""
    kind = draw(st.sampled_from(TYPES))
    value = draw(blobs() | JSON | st.lists(NUMBERS, max_size=4) | st.dictionaries(
        st.sampled_from(["array", "num_bits", "shape", "data", "fields", "colour", "__value__"]), JSON, max_size=4))
    return {"__type__": kind} if draw(st.integers(0, 9)) == 0 else {"__type__": kind, "__value__": value}


@st.composite
def deep_text(draw: st.DrawFn, where: str) -> str:
    """``where`` (JSON text with one ``@`` where a value goes) with that value nested very deep."""
    depth = draw(st.sampled_from([900, 1_000, 3_000, 30_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return where.replace("@", opener * depth + "0" + closer * depth)


def qiskit_inputs() -> st.SearchStrategy[str]:
    value = JSON | typed() | st.lists(typed(), min_size=1, max_size=2)
    pub = st.tuples(st.sampled_from([BELL, "OPENQASM 3.0;\nqubit[9] q;\n"]) | st.text(max_size=40) | typed(),
                    st.none() | value, st.integers(-10, 100) | value).map(list)
    precision = st.none() | NUMBERS | value
    near_valid = st.fixed_dictionaries({"pubs": st.lists(pub, max_size=3) | JSON,
                                        "version": st.sampled_from([2, 1, "2"]) | JSON},
                                       optional={"precision": precision, "shots": NUMBERS | value,
                                                 "options": value}).map(json.dumps)
    valid = json.dumps({"pubs": [[BELL, None, 8]], "version": 2})
    deep = deep_text(json.dumps({"pubs": [[BELL, "@", 8]], "version": 2}).replace('"@"', "@")) \
        | deep_text('{"pubs": @, "version": 2}') | deep_text("@")
    return near_valid | garbled(valid) | JSON.map(json.dumps) | st.text(max_size=60) | deep


def pulser_sequences() -> st.SearchStrategy[str]:
    valid = json.dumps(PULSER)
    deep = deep_text(valid.replace('"variables": {}', '"variables": @')) | deep_text(
        valid.replace('"register": [', '"register": [@, ', 1)) | deep_text("@")
    return mutated(PULSER).map(json.dumps) | garbled(valid) | JSON.map(json.dumps) | st.text(max_size=60) | deep


def payloads() -> st.SearchStrategy[pb.Payload]:
    qiskit = st.builds(pb.QiskitPrimitive, program_id=st.sampled_from(["sampler", "estimator"]) | st.text(max_size=12),
                       input=qiskit_inputs())
    pulser = st.builds(pb.PulserSequence, sequence=pulser_sequences(), job_runs=INT32)
    return (st.builds(pb.Payload, qiskit_primitive=qiskit) | st.builds(pb.Payload, pulser_sequence=pulser)
            | st.just(pb.Payload()))


def requests(descriptor: Descriptor, daemon: Daemon) -> st.SearchStrategy[Message]:
    """Random messages of type ``descriptor``: each field left out or set to a random value, with names,
    ids and tokens often those of real resources, tasks and leases."""
    cls = getattr(pb, descriptor.name)
    fields = {field.name: st.lists(values(field, daemon), max_size=4)
              if field.is_repeated else values(field, daemon)
              for field in descriptor.fields if field.message_type is None or field.message_type.name == "Payload"}
    return st.fixed_dictionaries({}, optional=fields).map(lambda kwargs: cls(**kwargs))


def values(field: FieldDescriptor, daemon: Daemon) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return payloads()
    if field.type == FieldDescriptor.TYPE_STRING:
        known: list[str] = {"resource": RESOURCES, "name": RESOURCES, "task_id": daemon.task_ids,
                            "token": daemon.tokens, "lease_token": daemon.tokens,
                            "priority": ["interactive", "production", "low"]}.get(field.name, [])
        text = st.text(max_size=40) | st.text(min_size=1000, max_size=5000)
        return st.sampled_from(known) | text if known else text
    if field.type == FieldDescriptor.TYPE_UINT32:
        return st.sampled_from([0, 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):
        return INT32
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    raise AssertionError(f"no strategy for field {field.full_name}")


# ---- tests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_requests_get_an_answer_or_a_deliberate_refusal(daemon: Daemon, method: str) -> None:
    @FUZZ
    @given(request=requests(METHODS[method].input_type, daemon))
    def fuzz(request: Message) -> None:
        call(daemon, method, request)

    fuzz()
    assert daemon.healthy()


@pytest.mark.parametrize("resource", RESOURCES)
def test_garbled_payloads_are_refused_as_invalid(daemon: Daemon, resource: str) -> None:
    """The simulators parse their payloads; noop takes any, so its answers exercise the whole task path."""
    kinds = {"local-qiskit": {"qiskit_primitive"}, "local-pulser": {"pulser_sequence"},
             "noop": {"qiskit_primitive", "pulser_sequence"}}

    @settings(FUZZ, max_examples=80)
    @given(payload=payloads())
    def fuzz(payload: pb.Payload) -> None:
        try:
            task = daemon.stub.StartTask(pb.StartTaskRequest(resource=resource, payload=payload), timeout=30)
        except grpc.RpcError as exc:
            assert _refusal(exc) in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
        else:
            assert payload.WhichOneof("kind") in kinds[resource], "only the resource's payload kinds are taken"
            daemon.stub.StopTask(pb.StopTaskRequest(task_id=task.id), timeout=30)

    fuzz()
    assert daemon.healthy()


def test_typed_values_are_refused_as_invalid(daemon: Daemon) -> None:
    """IBM's typed values in every place of a sampler and an estimator input: decoded, bounded, or refused."""
    slot = typed() | st.lists(typed(), min_size=1, max_size=3)
    sampler = st.tuples(st.just(BELL), slot, st.none() | st.integers(1, 64) | slot).map(
        lambda pub: json.dumps({"pubs": [list(pub)], "version": 2}))
    estimator = st.tuples(st.just(BELL.replace("c = measure q;", "")), st.just("ZZ") | slot, st.none() | slot,
                          st.none() | NUMBERS | slot).map(lambda pub: json.dumps({"pubs": [list(pub)], "version": 2}))
    inputs = st.tuples(st.just("sampler"), sampler) | st.tuples(st.just("estimator"), estimator)

    @settings(FUZZ, max_examples=80)
    @given(program_input=inputs)
    def fuzz(program_input: tuple[str, str]) -> None:
        program, text = program_input
        payload = pb.Payload(qiskit_primitive=pb.QiskitPrimitive(program_id=program, input=text))
        try:
            task = daemon.stub.StartTask(pb.StartTaskRequest(resource="local-qiskit", payload=payload), timeout=30)
        except grpc.RpcError as exc:
            assert _refusal(exc) == grpc.StatusCode.INVALID_ARGUMENT
        else:
            daemon.stub.StopTask(pb.StopTaskRequest(task_id=task.id), timeout=30)

    fuzz()
    assert daemon.healthy()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_bytes_in_place_of_a_message(daemon: Daemon, method: str) -> None:
    @settings(FUZZ, max_examples=25)
    @given(data=st.binary(max_size=300))
    def fuzz(data: bytes) -> None:
        call(daemon, method, data, raw=True)

    fuzz()
    assert daemon.healthy()


def test_an_oversized_message_is_refused_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    big = pb.StartTaskRequest(resource="noop", payload=pb.Payload(
        pulser_sequence=pb.PulserSequence(sequence="x" * (65 << 20), job_runs=1)))
    with pytest.raises(grpc.RpcError) as refused:
        daemon.stub.StartTask(big, timeout=60)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert daemon.healthy()
