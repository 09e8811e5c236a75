"""Generate qrmid's C stubs from the proto files.

Runs protoc-c twice over every ``.proto`` under the proto directory: once for
the message code (``*.pb-c.{h,c}``, including imported well-known types) and
once for a descriptor set. From the descriptor set it writes one pair of C
call wrappers per proto file that declares services
(``*.qrmid-c.{h,c}``), on top of the hand-written runtime in ``../runtime``.

Output is deterministic: files and RPCs come in proto order, and nothing
depends on time, paths outside the tree or the environment.

Usage: qrmid_c_gen.py --proto-dir ../../protos --out generated
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

GENERATOR = "stubs/c/gen/qrmid_c_gen.py"

# FileDescriptorProto field numbers used to find comments in source_code_info.
_SERVICE_FIELD = 6
_METHOD_FIELD = 2


def camel_to_lower(name: str) -> str:
    """`ListResources` -> `list_resources`, exactly as protoc-c does it."""
    out: list[str] = []
    was_upper = True
    for ch in name:
        is_upper = ch.isupper()
        if is_upper and not was_upper:
            out.append("_")
        out.append(ch.lower() if is_upper else ch)
        was_upper = is_upper
    return "".join(out)


def to_camel(name: str) -> str:
    """`v1` -> `V1`, `foo_bar` -> `FooBar`: protoc-c's name for a type piece."""
    out: list[str] = []
    upper_next = True
    for ch in name:
        if ch == "_":
            upper_next = True
        elif upper_next:
            out.append(ch.upper())
            upper_next = False
        else:
            out.append(ch)
    return "".join(out)


def c_type_name(full_name: str) -> str:
    """protoc-c's struct name of a message: `qrmid.v1.Task` -> `Qrmid__V1__Task`."""
    return "__".join(to_camel(p) for p in full_name.split(".") if p)


def c_lower_name(full_name: str) -> str:
    """protoc-c's function prefix of a message: `qrmid.v1.Task` -> `qrmid__v1__task`."""
    return "__".join(camel_to_lower(p) for p in full_name.split(".") if p)


def c_comment(text: str, indent: str = "") -> list[str]:
    """A proto comment as C block-comment lines (never closing the block early)."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    lines = [line.removeprefix(" ") for line in lines]
    return [f"{indent} *{' ' if line else ''}{line.replace('*/', '* /')}" for line in lines]


@dataclass(frozen=True)
class Rpc:
    """One RPC with every name the C code needs."""

    method_path: str  # "/qrmid.v1.QuantumResources/ListResources"
    function: str  # "qrmid_v1_quantum_resources_list_resources"
    request_type: str  # "Qrmid__V1__ListResourcesRequest"
    request_descriptor: str  # "qrmid__v1__list_resources_request__descriptor"
    response_type: str
    response_descriptor: str
    response_free: str  # "qrmid__v1__list_resources_response__free_unpacked"
    server_streaming: bool
    comment: str


@dataclass(frozen=True)
class Service:
    """One service of a proto file."""

    full_name: str
    comment: str
    rpcs: tuple[Rpc, ...]


def comments_of(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comments by source path."""
    return {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}


def services_of(file: descriptor_pb2.FileDescriptorProto) -> list[Service]:
    """The services of a file, in declaration order."""
    comments = comments_of(file)
    prefix = f"{file.package}." if file.package else ""
    services: list[Service] = []
    for s_idx, svc in enumerate(file.service):
        full = prefix + svc.name
        # qrmid.v1 + QuantumResources -> qrmid_v1_quantum_resources
        base = "_".join([p for p in file.package.split(".") if p] + [camel_to_lower(svc.name)])
        rpcs: list[Rpc] = []
        for m_idx, m in enumerate(svc.method):
            if m.client_streaming:
                raise SystemExit(
                    f"{file.name}: {full}.{m.name} is client-streaming; the C runtime has no such call yet"
                )
            req, resp = m.input_type.lstrip("."), m.output_type.lstrip(".")
            rpcs.append(
                Rpc(
                    method_path=f"/{full}/{m.name}",
                    function=f"{base}_{camel_to_lower(m.name)}",
                    request_type=c_type_name(req),
                    request_descriptor=f"{c_lower_name(req)}__descriptor",
                    response_type=c_type_name(resp),
                    response_descriptor=f"{c_lower_name(resp)}__descriptor",
                    response_free=f"{c_lower_name(resp)}__free_unpacked",
                    server_streaming=m.server_streaming,
                    comment=comments.get((_SERVICE_FIELD, s_idx, _METHOD_FIELD, m_idx), ""),
                )
            )
        services.append(Service(full, comments.get((_SERVICE_FIELD, s_idx), ""), tuple(rpcs)))
    return services


def message_files(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Map each message's full name to the proto file defining it."""
    owner: dict[str, str] = {}

    def walk(prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto], file_name: str) -> None:
        for msg in messages:
            full = f"{prefix}{msg.name}"
            owner[full] = file_name
            walk(f"{full}.", msg.nested_type, file_name)

    for f in files:
        walk(f"{f.package}." if f.package else "", f.message_type, f.name)
    return owner


def stem(proto_name: str) -> str:
    """`qrmid/v1/x.proto` -> `qrmid/v1/x`."""
    return proto_name.removesuffix(".proto")


def render_header(file: descriptor_pb2.FileDescriptorProto, services: list[Service], includes: list[str]) -> str:
    """The wrappers' declarations."""
    guard = "".join(c if c.isalnum() else "_" for c in stem(file.name)).upper() + "_QRMID_C_H"
    out = [
        f"/* Generated by {GENERATOR} from {file.name}. Do not edit. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
        '#include "qrmid_c.h"',
        *[f'#include "{inc}"' for inc in includes],
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
    ]
    for svc in services:
        out += ["", "/*", f" * Service {svc.full_name}."]
        if svc.comment:
            out += [" *", *c_comment(svc.comment)]
        out += [" */"]
        for rpc in svc.rpcs:
            macro = f"{rpc.function.upper()}_METHOD"
            out += ["", "/*", f" * {rpc.method_path}"]
            if rpc.comment:
                out += [" *", *c_comment(rpc.comment)]
            out += [" *"]
            if rpc.server_streaming:
                out += [
                    " * Server streaming: _open() starts the call; each _next() returns",
                    " * GRPC_STATUS_OK with a new message (free it with",
                    f" * {rpc.response_free}(msg, NULL)), GRPC_STATUS_OK with",
                    " * *message == NULL at the end of the stream, or an error status.",
                    " * _close() ends the call (cancelling it if unfinished) and frees the stream.",
                    " */",
                    f'#define {macro} "{rpc.method_path}"',
                    f"grpc_status_code {rpc.function}_open(",
                    "    qrmid_client *client,",
                    f"    const {rpc.request_type} *request,",
                    "    int64_t timeout_ms,",
                    "    qrmid_stream **stream,",
                    "    qrmid_error *error);",
                    f"grpc_status_code {rpc.function}_next(",
                    "    qrmid_stream *stream,",
                    f"    {rpc.response_type} **message,",
                    "    qrmid_error *error);",
                    f"void {rpc.function}_close(qrmid_stream *stream);",
                ]
            else:
                out += [
                    " * Unary: on GRPC_STATUS_OK *response is a new message; free it with",
                    f" * {rpc.response_free}(*response, NULL).",
                    " */",
                    f'#define {macro} "{rpc.method_path}"',
                    f"grpc_status_code {rpc.function}(",
                    "    qrmid_client *client,",
                    f"    const {rpc.request_type} *request,",
                    f"    {rpc.response_type} **response,",
                    "    int64_t timeout_ms,",
                    "    qrmid_error *error);",
                ]
    out += ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(out)


def render_source(file: descriptor_pb2.FileDescriptorProto, services: list[Service]) -> str:
    """The wrappers' definitions: each one forwards to the generic runtime call."""
    out = [
        f"/* Generated by {GENERATOR} from {file.name}. Do not edit. */",
        f'#include "{stem(file.name)}.qrmid-c.h"',
    ]
    for svc in services:
        for rpc in svc.rpcs:
            macro = f"{rpc.function.upper()}_METHOD"
            if rpc.server_streaming:
                out += [
                    "",
                    f"grpc_status_code {rpc.function}_open(",
                    "    qrmid_client *client,",
                    f"    const {rpc.request_type} *request,",
                    "    int64_t timeout_ms,",
                    "    qrmid_stream **stream,",
                    "    qrmid_error *error)",
                    "{",
                    f"  return qrmid_stream_open(client, {macro},",
                    f"                           &{rpc.request_descriptor}, (const ProtobufCMessage *)request,",
                    f"                           &{rpc.response_descriptor}, timeout_ms, stream, error);",
                    "}",
                    "",
                    f"grpc_status_code {rpc.function}_next(",
                    "    qrmid_stream *stream,",
                    f"    {rpc.response_type} **message,",
                    "    qrmid_error *error)",
                    "{",
                    "  ProtobufCMessage *out = NULL;",
                    "  grpc_status_code code =",
                    f"      qrmid_stream_next(stream, &{rpc.response_descriptor}, &out, error);",
                    "  if (message != NULL)",
                    f"    *message = ({rpc.response_type} *)out;",
                    "  return code;",
                    "}",
                    "",
                    f"void {rpc.function}_close(qrmid_stream *stream)",
                    "{",
                    "  qrmid_stream_close(stream);",
                    "}",
                ]
            else:
                out += [
                    "",
                    f"grpc_status_code {rpc.function}(",
                    "    qrmid_client *client,",
                    f"    const {rpc.request_type} *request,",
                    f"    {rpc.response_type} **response,",
                    "    int64_t timeout_ms,",
                    "    qrmid_error *error)",
                    "{",
                    "  ProtobufCMessage *out = NULL;",
                    f"  grpc_status_code code = qrmid_call_unary(client, {macro},",
                    f"      &{rpc.request_descriptor}, (const ProtobufCMessage *)request,",
                    f"      &{rpc.response_descriptor}, response != NULL ? &out : NULL,",
                    "      timeout_ms, error);",
                    "  if (response != NULL)",
                    f"    *response = ({rpc.response_type} *)out;",
                    "  return code;",
                    "}",
                ]
    out.append("")
    return "\n".join(out)


def find_protos(proto_dir: Path) -> list[str]:
    """Every .proto under proto_dir, relative and sorted."""
    return sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))


def run_protoc_c(protoc_c: str, proto_dir: Path, include_dirs: list[Path], args: list[str]) -> None:
    """Run protoc-c from proto_dir with the include path set."""
    cmd = [protoc_c, "-I.", *[f"-I{d}" for d in include_dirs], *args]
    subprocess.run(cmd, cwd=proto_dir, check=True)


def generate(proto_dir: Path, out_dir: Path, protoc_c: str, include_dirs: list[Path]) -> list[Path]:
    """Write every generated file under out_dir; return their paths."""
    protos = find_protos(proto_dir)
    if not protos:
        raise SystemExit(f"no .proto files under {proto_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        ds_path = Path(tmp) / "descriptors.pb"
        run_protoc_c(
            protoc_c,
            proto_dir,
            include_dirs,
            [f"--descriptor_set_out={ds_path}", "--include_imports", "--include_source_info", *protos],
        )
        fds = descriptor_pb2.FileDescriptorSet.FromString(ds_path.read_bytes())
    files = list(fds.file)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Message code for the protos and everything they import (e.g. timestamp.proto).
    run_protoc_c(protoc_c, proto_dir, include_dirs, [f"--c_out={out_dir.resolve()}", *sorted(f.name for f in files)])
    written = [out_dir / f"{stem(f.name)}.pb-c.{ext}" for f in files for ext in ("h", "c")]
    owners = message_files(files)
    wanted = set(protos)
    for f in sorted(files, key=lambda f: f.name):
        if f.name not in wanted:
            continue
        services = services_of(f)
        if not services:
            continue
        used = {owners[t.lstrip(".")] for s in f.service for m in s.method for t in (m.input_type, m.output_type)}
        includes = sorted(f"{stem(name)}.pb-c.h" for name in used | {f.name})
        for ext, text in (("h", render_header(f, services, includes)), ("c", render_source(f, services))):
            path = out_dir / f"{stem(f.name)}.qrmid-c.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto-dir", type=Path, required=True, help="root of the .proto tree (e.g. protos/)")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--protoc-c", default="protoc-c", help="protoc-c executable")
    ap.add_argument(
        "--include",
        type=Path,
        action="append",
        default=None,
        help="extra import path for well-known types (default: /usr/include)",
    )
    ns = ap.parse_args(argv)
    includes = ns.include if ns.include else [Path("/usr/include")]
    for path in generate(ns.proto_dir.resolve(), ns.out, ns.protoc_c, includes):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
