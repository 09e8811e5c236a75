"""Server reflection under both of its names: ``grpc.reflection.v1`` (what current grpcurl, grpc_cli and Postman
ask for first) and ``grpc.reflection.v1alpha`` (older clients).

grpcio-reflection (1.85) ships only v1alpha. v1 is the same protocol, its messages the same fields under a new
package, so one servicer answers both; v1's descriptor is registered under its own name so that reflection can
describe itself under either. A method's name (``grpcurl describe pkg.Service.Method``) is answered with its
service's file, which protobuf's descriptor pool does not find by itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE = f"{V1}.ServerReflection"


def enable(services: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection, v1 and v1alpha, listing ``services`` and both reflection services."""
    _register_v1()
    servicer = _Reflection([*services, V1_SERVICE, reflection.SERVICE_NAME])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}),))


class _Reflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """The library's servicer, finding a method by its full name as its service's file."""

    def _file_containing_symbol(self, request: reflection_pb2.ServerReflectionRequest,
                                fully_qualified_name: str) -> reflection_pb2.ServerReflectionResponse:
        service, _, method = fully_qualified_name.rpartition(".")
        try:
            found = self._pool.FindServiceByName(service)
        except KeyError:
            found = None
        if found is not None and method in found.methods_by_name:
            fully_qualified_name = service
        return super()._file_containing_symbol(request, fully_qualified_name)


def _register_v1() -> None:
    """Add v1's file (v1alpha's, renamed) to the default descriptor pool, once per process."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = V1_FILE, V1
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(f".{ALPHA}.", f".{V1}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{ALPHA}.", f".{V1}.")
            method.output_type = method.output_type.replace(f".{ALPHA}.", f".{V1}.")
    pool.Add(proto)
