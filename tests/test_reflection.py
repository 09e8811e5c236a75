"""Server reflection under both names, grpc.reflection.v1 and v1alpha, asked by the real grpcurl and over a raw
channel."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemons import subprocess_daemon
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

GRPCURL = Path(sys.executable).parent / "grpcurl"  # installed into the venv with the test extras
SERVICES = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
            "qrmid.v1.AdminService", "qrmid.v1.MetricsService", "qrmid.v1.QuantumResources"]


@pytest.fixture(scope="module")
def socket() -> Iterator[str]:
    with subprocess_daemon('[[resources]]\ntype = "noop"\nname = "n"\n') as (address, _):
        yield address.removeprefix("unix:")


def grpcurl(*args: str) -> str:
    run = subprocess.run([str(GRPCURL), "-plaintext", "-unix", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_grpcurl_lists_every_service(socket: str) -> None:
    assert grpcurl(socket, "list").split() == SERVICES


def test_v1_answers_grpcurl(socket: str) -> None:
    v1 = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    listed = json.loads(grpcurl("-d", '{"list_services": ""}', socket, v1))
    assert [service["name"] for service in listed["list_services_response"]["service"]] == SERVICES
    found = json.loads(grpcurl("-d", '{"file_containing_symbol": "qrmid.v1.QuantumResources"}', socket, v1))
    assert found["file_descriptor_response"]["file_descriptor_proto"]
    described = grpcurl(socket, "describe", "grpc.reflection.v1.ServerReflection")
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in described


def test_grpcurl_describes_a_method(socket: str) -> None:
    described = grpcurl(socket, "describe", "qrmid.v1.QuantumResources.RunTask")
    assert "rpc RunTask ( .qrmid.v1.StartTaskRequest ) returns ( stream .qrmid.v1.RunTaskResponse )" in described
    assert "Symbol not found" in subprocess.run([str(GRPCURL), "-plaintext", "-unix", socket, "describe",
                                                 "qrmid.v1.QuantumResources.NoSuchMethod"],
                                                capture_output=True, text=True, timeout=60).stderr


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_each_version_describes_the_api_over_a_raw_channel(socket: str, version: str) -> None:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        [answer] = call(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="qrmid.v1.QuantumResources")]), timeout=30)
    assert not answer.HasField("error_response"), answer.error_response.error_message
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in answer.file_descriptor_response.file_descriptor_proto]
    [api] = [f for f in files if f.package == "qrmid.v1" and f.service]
    assert "StartTask" in [method.name for method in api.service[0].method]
