"""Caller identity per listener: bearer tokens, MUNGE decoding, TLS on TCP, and the start-up refusals that keep
an unauthenticated listener private and secrets out of readable files."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemons import ROOT, config, running, short_dir
from munged import munged

from qrmid.api.auth import Admins, AuthError, Munge
from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.daemon import StartupError
from qrmid.ops import munge
from qrmid.ops.config import ConfigError, load
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

NOOP = [{"type": "noop", "name": "noop", "slots": 2}]
TOKENS = {"svc-a": "a" * 24, "svc-b": "b" * 24, "ops": "c" * 24}


def write_tokens(path: Path, mode: int = 0o600) -> Path:
    path.write_text('[[token]]\nname = "svc-a"\ntoken = "' + TOKENS["svc-a"] + '"\n'
                    '[[token]]\nname = "svc-b"\ntoken = "' + TOKENS["svc-b"] + '"\n'
                    '[[token]]\nname = "ops"\ntoken = "' + TOKENS["ops"] + '"\nadmin = true\n')
    path.chmod(mode)
    return path


def token_auth(name: str, **tls: Path) -> ClientAuth:
    path = short_dir() / "token"
    path.write_text(TOKENS[name])
    return ClientAuth.resolve("token", token_file=path, **tls)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def token_daemon() -> AsyncIterator[str]:
    tokens = write_tokens(short_dir() / "tokens.toml")
    async with running(config(NOOP, daemon={"auth": "token"}, auth={"tokens_file": str(tokens)})) as daemon:
        yield f"unix:{daemon.socket}"


async def test_bearer_tokens_name_services(token_daemon: str) -> None:
    async with AsyncClient(token_daemon, auth=token_auth("svc-a")) as a, \
            AsyncClient(token_daemon, auth=token_auth("svc-b")) as b, \
            AsyncClient(token_daemon, auth=token_auth("ops")) as ops:
        task = await a.start_task("noop", pulser_payload({}, 1))
        assert task.owner == "svc-a"
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await b.task(task.id)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await ops.task(task.id)).owner == "svc-a", "an admin service sees every task"
        with pytest.raises(grpc.aio.AioRpcError) as not_admin:
            await a.acquire("noop", on_behalf_of="root")
        assert not_admin.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await ops.acquire("noop", on_behalf_of="0")).owner == "root"


@pytest.mark.parametrize(("metadata", "expected"), [
    ((), "needs 'authorization: Bearer <token>'"),
    ((("authorization", "Bearer " + "z" * 24),), "unknown bearer token"),
    ((("authorization", TOKENS["svc-a"]),), "needs 'authorization: Bearer <token>'"),
    ((("authorization", "Bearer " + TOKENS["svc-a"][:-1]),), "unknown bearer token"),
])
async def test_bad_tokens_are_unauthenticated(token_daemon: str, metadata: tuple[tuple[str, str], ...],
                                              expected: str) -> None:
    async with grpc.aio.insecure_channel(token_daemon) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.QuantumResourcesStub(channel).ListResources(pb.ListResourcesRequest(), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert expected in refused.value.details()
    assert TOKENS["svc-a"] not in refused.value.details()
    async with AsyncClient(token_daemon, auth=token_auth("svc-a")) as client:
        assert [r.name for r in await client.list_resources()] == ["noop"], "the daemon keeps serving"


@pytest.mark.parametrize(("mode", "owner", "expected"), [
    (0o640, None, "has mode 0640, readable by group or other users; run: chmod 600"),
    (0o600, 65534, "not by the daemon's uid"),
])
async def test_a_tokens_file_others_could_read_or_replace_is_refused(mode: int, owner: int | None,
                                                                     expected: str) -> None:
    tokens = write_tokens(short_dir() / "tokens.toml", mode)
    if owner is not None:
        os.chown(tokens, owner, -1)
    with pytest.raises(StartupError, match=expected):
        async with running(config(NOOP, daemon={"auth": "token"}, auth={"tokens_file": str(tokens)})):
            pass


def test_no_auth_is_refused_on_a_socket_others_can_open(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text(f'[daemon]\nsocket = "{short_dir() / "s.sock"}"\nsocket_mode = "0660"\n')
    run = subprocess.run([sys.executable, "-m", "qrmid", "serve", "--config", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert "must not give other users access while auth = \"none\"" in run.stderr
    path.write_text(f'[daemon]\nsocket = "{short_dir() / "s.sock"}"\nsocket_mode = "0666"\nauth = "munge"\n')
    assert load(path).daemon.socket_mode == "0666", "with MUNGE, any user may connect and is who MUNGE says"


@pytest.mark.parametrize(("text", "expected"), [
    ('tcp = "127.0.0.1:1"\ntcp_auth = "none"\n', "key 'daemon.tcp_auth'"),
    ('tcp = "127.0.0.1:1"\ntls_cert = "/c.pem"\n', "tls_cert and tls_key go together"),
    ('tls_cert = "/c.pem"\ntls_key = "/k.pem"\n', "'tcp' is not set"),
    ('auth = "token"\n', "tokens_file is not set"),
])
def test_unsafe_listeners_are_refused_in_the_config(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text(f"[daemon]\n{text}")
    with pytest.raises(ConfigError, match=expected):
        load(path)


def test_a_config_holding_secrets_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text('[[resources]]\ntype = "ibm-quantum-system"\nname = "fez"\nQRMI_IBM_QS_ENDPOINT = "http://x"\n'
                    'QRMI_IBM_QS_IAM_ENDPOINT = "http://x"\nQRMI_IBM_QS_IAM_APIKEY = "hush-hush-apikey"\n'
                    'QRMI_IBM_QS_SERVICE_CRN = "crn"\nQRMI_IBM_QS_AWS_ACCESS_KEY_ID = "hush-id"\n'
                    'QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "hush-secret"\nQRMI_IBM_QS_S3_ENDPOINT = "http://s3"\n'
                    'QRMI_IBM_QS_S3_BUCKET = "b"\nQRMI_IBM_QS_S3_REGION = "r"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError) as refused:
        load(path)
    message = str(refused.value)
    assert f"{path}: holds secrets" in message and "mode 0644" in message and f"chmod 600 {path}" in message
    assert "hush" not in message
    path.chmod(0o600)
    assert load(path).resources[0].name == "fez"
    path.write_text('[[resources]]\ntype = "noop"\nname = "n"\n')
    path.chmod(0o644)
    assert load(path).resources[0].name == "n", "a config without secrets may be readable"


@pytest.fixture(scope="module")
def munge_socket() -> Iterator[str]:
    with munged() as path:
        yield str(path)


async def test_munge_proves_the_encoding_user_once(munge_socket: str) -> None:
    authenticator = Munge(Admins(""), munge_socket)
    credential = munge.encode(b"", munge_socket)
    identity = await authenticator.authenticate([("x-qrmid-munge", credential)])
    assert (identity.name, identity.uid, identity.admin) == ("root", 0, True)
    with pytest.raises(AuthError) as replayed:
        await authenticator.authenticate([("x-qrmid-munge", credential)])
    assert replayed.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "Replayed credential" in str(replayed.value) and "fresh credential" in str(replayed.value)


async def test_an_expired_munge_credential_is_unauthenticated(munge_socket: str) -> None:
    credential = munge.encode(b"", munge_socket, ttl=1)
    await asyncio.sleep(2.5)  # past its one-second lifetime
    with pytest.raises(AuthError) as expired:
        await Munge(Admins(""), munge_socket).authenticate([("x-qrmid-munge", credential)])
    assert expired.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "Expired credential" in str(expired.value) and "check the clocks" in str(expired.value)


@pytest.mark.parametrize(("metadata", "expected"), [
    ([("x-qrmid-munge", "not a credential")], "MUNGE credential refused"),
    ([("x-qrmid-munge", "MUNGE:AwQFAACBAO4559T5qtbUtExk:")], "MUNGE credential refused"),
    ([], "needs a MUNGE credential"),
    ([("x-qrmid-munge", "a"), ("x-qrmid-munge", "b")], "send one 'x-qrmid-munge' metadata entry"),
])
async def test_undecodable_munge_credentials_are_unauthenticated(munge_socket: str, metadata: list[tuple[str, str]],
                                                                 expected: str) -> None:
    with pytest.raises(AuthError) as refused:
        await Munge(Admins(""), munge_socket).authenticate(metadata)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert expected in str(refused.value)


async def test_munge_unreachable_is_unavailable(munge_socket: str) -> None:
    credential = munge.encode(b"", munge_socket)
    with pytest.raises(AuthError) as refused:
        await Munge(Admins(""), str(short_dir() / "absent.socket")).authenticate([("x-qrmid-munge", credential)])
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "cannot reach munged" in str(refused.value)


def test_unknown_admin_group_is_refused() -> None:
    with pytest.raises(Exception, match="admin_group 'no-such-group-here' is not a group"):
        Admins("no-such-group-here")


def _certificate(directory: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
                 ) -> tuple[Path, Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``name`` (localhost and 127.0.0.1), self-signed unless ``issuer`` signs it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(signer_cert.subject if signer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    cert = builder.sign(signer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path, cert, key


async def test_tls_on_tcp_with_optional_client_certificates() -> None:
    d = short_dir()
    server_cert, server_key, _, _ = _certificate(d, "localhost")
    ca_cert, _, ca, ca_key = _certificate(d, "qrmid-client-ca")
    client_cert, client_key, _, _ = _certificate(d, "client", (ca, ca_key))
    tokens = write_tokens(d / "tokens.toml")
    port = free_port()
    tls = {"tcp": f"127.0.0.1:{port}", "tcp_auth": "token", "tls_cert": str(server_cert), "tls_key": str(server_key)}
    async with running(config(NOOP, daemon=tls, auth={"tokens_file": str(tokens)})):
        async with AsyncClient(f"localhost:{port}", auth=token_auth("svc-a", tls_ca=server_cert)) as client:
            assert [r.name for r in await client.list_resources()] == ["noop"]
        async with AsyncClient(f"localhost:{port}", auth=token_auth("svc-a"), timeout=5) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await plain.list_resources()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "a plaintext client cannot talk to TLS"
    port = free_port()
    mutual = {**tls, "tcp": f"127.0.0.1:{port}", "tls_client_ca": str(ca_cert)}
    async with running(config(NOOP, daemon=mutual, auth={"tokens_file": str(tokens)})):
        async with AsyncClient(f"localhost:{port}", auth=token_auth("svc-a", tls_ca=server_cert,
                                                                     tls_cert=client_cert, tls_key=client_key)) as ok:
            assert [r.name for r in await ok.list_resources()] == ["noop"]
        async with AsyncClient(f"localhost:{port}", auth=token_auth("svc-a", tls_ca=server_cert), timeout=5) as no:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await no.list_resources()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "no client certificate, no connection"


async def test_a_readable_tls_key_is_refused() -> None:
    d = short_dir()
    cert, key, _, _ = _certificate(d, "localhost")
    key.chmod(0o644)
    tokens = write_tokens(d / "tokens.toml")
    tls = {"tcp": f"127.0.0.1:{free_port()}", "tcp_auth": "token", "tls_cert": str(cert), "tls_key": str(key)}
    with pytest.raises(StartupError, match="TLS key .* has mode 0644"):
        async with running(config(NOOP, daemon=tls, auth={"tokens_file": str(tokens)})):
            pass
