"""MUNGE credentials through libmunge (``libmunge.so.2``), the HPC authentication service Slurm uses.

Both calls talk to the local ``munged`` over its Unix socket and block, so async code runs them in a
worker thread (the daemon decodes on a pool of its own, see ``qrmid.api.auth.Munge``). Nothing is cached: every credential goes to ``munged``, which is
what refuses a replay.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from typing import Any, Self

MUNGE_OPT_TTL = 4
MUNGE_OPT_SOCKET = 8

EMUNGE_SNAFU = 1
EMUNGE_SOCKET = 6
EMUNGE_TIMEOUT = 7
EMUNGE_CRED_EXPIRED = 15
EMUNGE_CRED_REWOUND = 16
EMUNGE_CRED_REPLAYED = 17
UNREACHABLE = frozenset({EMUNGE_SOCKET, EMUNGE_TIMEOUT})  # munged is down, not the credential bad


class MungeError(Exception):
    """libmunge refused; ``code`` is its munge_err_t and the message its explanation."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def unreachable(self) -> bool:
        """True when ``munged`` could not be reached, so retrying later may succeed."""
        return self.code in UNREACHABLE


@dataclass(frozen=True, slots=True)
class Credential:
    """What a valid credential proves: who encoded it, and the payload they put in it."""

    uid: int
    gid: int
    payload: bytes


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("munge") or "libmunge.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise MungeError(0, f"cannot load libmunge ({exc}); install the libmunge2 package") from None
    lib.munge_ctx_create.restype = ctypes.c_void_p
    lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_strerror.restype = ctypes.c_char_p
    lib.munge_strerror.argtypes = [ctypes.c_int]
    lib.munge_strerror.restype = ctypes.c_char_p
    lib.munge_encode.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.munge_decode.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.POINTER(ctypes.c_uint)]
    return lib


def _address(pointer: ctypes.c_void_p) -> int:
    """The address ``pointer`` holds; libmunge set it, having returned success."""
    if pointer.value is None:
        raise MungeError(EMUNGE_SNAFU, "libmunge returned success without a result")
    return pointer.value


@functools.cache
def _free() -> Any:
    free = ctypes.CDLL(None).free
    free.argtypes = [ctypes.c_void_p]
    return free


class _Context:
    """A munge_ctx_t for one call, pointed at ``socket`` when given (libmunge's default otherwise)."""

    def __init__(self, socket: str | None) -> None:
        self.lib = _lib()
        self.ctx = self.lib.munge_ctx_create()
        if not self.ctx:
            raise MungeError(5, "libmunge could not allocate a context")
        if socket:
            self._check(self.lib.munge_ctx_set(self.ctx, MUNGE_OPT_SOCKET, socket.encode()))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.munge_ctx_destroy(self.ctx)

    def _check(self, code: int) -> None:
        if code:
            detail = self.lib.munge_ctx_strerror(self.ctx) or self.lib.munge_strerror(code)
            raise MungeError(code, detail.decode(errors="replace"))


def encode(payload: bytes = b"", socket: str | None = None, ttl: int = 0) -> str:
    """A fresh credential for the calling process's uid and gid, valid ``ttl`` seconds (0: munged's default,
    usually 5 minutes) (blocking)."""
    with _Context(socket) as context:
        if ttl:
            set_int = context.lib["munge_ctx_set"]  # a separate handle: the option's value is an int here
            set_int.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            context._check(set_int(context.ctx, MUNGE_OPT_TTL, ttl))
        cred = ctypes.c_void_p()
        context._check(context.lib.munge_encode(ctypes.byref(cred), context.ctx, payload or None, len(payload)))
        try:
            return ctypes.string_at(_address(cred)).decode()
        finally:
            _free()(cred)


def decode(credential: str, socket: str | None = None) -> Credential:
    """The uid, gid and payload a credential proves (blocking); MungeError when it is not valid,
    including when it is expired, from the future, or was already decoded once (a replay)."""
    with _Context(socket) as context:
        buf, length = ctypes.c_void_p(), ctypes.c_int()
        uid, gid = ctypes.c_uint(), ctypes.c_uint()
        code = context.lib.munge_decode(credential.encode(), context.ctx, ctypes.byref(buf), ctypes.byref(length),
                                        ctypes.byref(uid), ctypes.byref(gid))
        try:
            context._check(code)
            return Credential(uid.value, gid.value, ctypes.string_at(_address(buf), length.value) if buf else b"")
        finally:
            if buf:
                _free()(buf)
