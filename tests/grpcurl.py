"""A stand-in for grpcurl, for the docs test on machines without it (grpcurl is neither a Debian bookworm package
nor on PyPI). It takes the subset of grpcurl's command line the docs use, with grpcurl's rules, and makes the call
the way grpcurl does: it learns the services from the server's reflection and turns JSON into messages and back.

    python grpcurl.py [-plaintext] [-unix] [-d JSON|@] [-H 'name: value']... ADDRESS (list [SERVICE] | METHOD)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

USAGE = "usage: grpcurl [-plaintext] [-unix] [-d DATA] [-H 'name: value']... ADDRESS (list [SERVICE] | METHOD)"


def fail(message: str, code: int = 2) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(code)


@dataclass
class Flags:
    plaintext: bool = False
    unix: bool = False
    data: str | None = None
    headers: list[str] = field(default_factory=list)


def parse(argv: list[str]) -> tuple[Flags, list[str]]:
    """grpcurl's flags (Go's flag package: every flag before the positional arguments)."""
    flags, args = Flags(), list(argv)
    while args and args[0].startswith("-") and args[0] != "-":
        flag = args.pop(0).lstrip("-")
        if flag == "plaintext":
            flags.plaintext = True
        elif flag == "unix":
            flags.unix = True
        elif flag in ("d", "H"):
            if not args:
                fail(f"flag needs an argument: -{flag}\n{USAGE}")
            if flag == "H":
                flags.headers.append(args.pop(0))
            else:
                flags.data = args.pop(0)
        else:
            fail(f"flag provided but not defined: -{flag}\n{USAGE}")
    return flags, args


def main(argv: list[str]) -> None:
    flags, args = parse(argv)
    if not args:
        fail(f"Too few arguments.\n{USAGE}")
    if not flags.plaintext:
        fail("this stand-in speaks plaintext only: pass -plaintext (the docs' daemons listen on Unix sockets)")
    address, rest = args[0], args[1:]
    if flags.unix:
        target = f"unix:{address}"
    elif address.count(":") == 1 and not address.startswith("unix"):
        target = address
    else:
        fail(f"Failed to dial target host \"{address}\": not HOST:PORT (use -unix for a socket path)", 1)
    metadata = []
    for header in flags.headers:
        name, sep, value = header.partition(":")
        if not sep:
            fail(f"header {header!r} is not 'name: value'")
        metadata.append((name.strip().lower(), value.strip()))
    with grpc.insecure_channel(target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        if not rest:
            fail(f"Too few arguments.\n{USAGE}")
        if rest[0] == "list":
            listing(channel, pool, rest[1] if len(rest) > 1 else None)
        else:
            invoke(channel, pool, rest[0], flags.data, metadata)


def listing(channel: grpc.Channel, pool: descriptor_pool.DescriptorPool, service: str | None) -> None:
    if service is None:
        database = ProtoReflectionDescriptorDatabase(channel)
        for name in sorted(database.get_services()):
            print(name)
        return
    for method in pool.FindServiceByName(service).methods:
        print(method.full_name)


def invoke(channel: grpc.Channel, pool: descriptor_pool.DescriptorPool, symbol: str, data: str | None,
           metadata: list[tuple[str, str]]) -> None:
    service_name, sep, method_name = symbol.partition("/")
    if not sep:
        service_name, _, method_name = symbol.rpartition(".")
    try:
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
    except KeyError:
        fail(f"Error invoking method \"{symbol}\": target server does not expose service \"{service_name}\" "
             f"with method \"{method_name}\"", 1)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    text = sys.stdin.read() if data == "@" else (data or "{}")
    try:
        request = json_format.Parse(text, request_class(), descriptor_pool=pool)
    except json_format.ParseError as exc:
        fail(f"Error invoking method \"{symbol}\": error getting request data: {exc}", 1)
    path = f"/{service_name}/{method_name}"
    serialize, deserialize = request_class.SerializeToString, response_class.FromString
    try:
        if method.server_streaming:
            responses = channel.unary_stream(path, serialize, deserialize)(request, metadata=metadata)
        else:
            responses = [channel.unary_unary(path, serialize, deserialize)(request, metadata=metadata)]
        for response in responses:
            print(json_format.MessageToJson(response, descriptor_pool=pool, indent=2))
    except grpc.RpcError as exc:
        print(f"ERROR:\n  Code: {exc.code().name.title().replace('_', '')}\n  Message: {exc.details()}",
              file=sys.stderr)
        sys.exit(64 + exc.code().value[0])


if __name__ == "__main__":
    main(sys.argv[1:])
