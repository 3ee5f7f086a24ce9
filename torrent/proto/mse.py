"""Message Stream Encryption (MSE, also called Protocol Encryption, PE): the handshake, sans-IO.

The Vuze/libtorrent "Message Stream Encryption" specification (there is no BEP) hides a
BitTorrent connection behind a Diffie-Hellman key exchange and an RC4 stream, so that it cannot
be told apart by its first bytes. This module covers:

* the handshake for both roles as state machines: :class:`Initiator` (the spec's *A*, who dials)
  and :class:`Receiver` (*B*, who accepted the connection);
* the payload streams both sides use once the handshake is done: :class:`RC4Stream` (RC4 from
  OpenSSL through the ``cryptography`` package, first 1024 bytes of each keystream discarded) and
  :class:`PlaintextStream` (the "plaintext" crypto method: only the handshake was obfuscated);
* :func:`classify_incoming`: whether an accepted connection opens with a plaintext BitTorrent
  handshake or with an MSE one.

Left out: sockets, timeouts and retries (see "Timeouts" below), the choice of policy
(require / prefer / off: the caller picks ``provide`` and ``allowed``), and any crypto method other
than RC4 (0x02) and plaintext (0x01); bits for other methods in ``crypto_provide`` are ignored.

The exchange (``HASH`` is SHA-1, ``S`` the 96-byte shared secret, ``SKEY`` the torrent's info hash;
``ENCRYPT`` is RC4 keyed with ``HASH('keyA', S, SKEY)`` from A to B and ``HASH('keyB', S, SKEY)``
from B to A; ``ENCRYPT2`` is the crypto method B selected)::

    1 A->B: Ya, PadA
    2 B->A: Yb, PadB
    3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
            ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
    5 A->B: ENCRYPT2(payload stream)

Rules and invariants of the state machines:

1. Bytes in, events and bytes out. ``receive_data(data)`` only buffers (``b""`` means the
   peer closed the connection); ``next_event()`` does the work and returns :data:`NEED_DATA` or,
   once, :class:`HandshakeDone`; ``data_to_send()`` hands over whatever the machine queued. Call
   ``data_to_send()`` after construction (the initiator's ``Ya, PadA``) and after every
   ``next_event()``.
2. The padding before a synchronisation point has an unknown length, so each side scans for a
   marker, within the spec's bounds: the receiver for ``HASH('req1', S)``, which must end within
   96 + 512 + 20 = 628 bytes of the connection's start; the initiator for ``ENCRYPT(VC)``, which
   must end within 96 + 512 + 8 = 616 bytes of the start of B's stream. Every other field has a
   known length; ``len(PadC)`` and ``len(PadD)`` are at most 512.
3. Bad input (a public key out of range, no marker within its bound, an ``SKEY`` hash that matches
   no candidate torrent, a ``VC`` that is not zero, no crypto method in common, a
   ``crypto_select`` that is not one method we offered, a padding length over 512, the connection
   closed half-way) moves the machine to its terminal ``FAILED`` state and raises
   :class:`HandshakeError` (a :class:`~torrent.errors.RemoteProtocolError`) naming the
   :class:`Failure`; every later call raises it again. No input raises anything else. Using the
   API wrongly (data after the end, asking for the stream too early) raises
   :class:`~torrent.errors.LocalProtocolError`: a bug on our side.
4. The initial payload ``IA`` (in practice the 68-byte BitTorrent handshake) is always RC4
   encrypted, whatever method B then selects; the payload stream after the handshake is
   ``ENCRYPT2``. The RC4 contexts of the handshake carry on into :class:`RC4Stream` without a
   break, so ``stream().encrypt`` continues the same keystream.

Timeouts are the caller's: a peer that stops sending part-way leaves the machine at
:data:`NEED_DATA` for ever. The spec suggests dropping a handshake that has not progressed
within 30 seconds; wrap the whole exchange in ``asyncio.timeout``.

Usage (one machine per TCP connection; the receiver side differs only in its constructor)::

    hs = Initiator(info_hash, initial_payload=encode_handshake(info_hash, peer_id))
    writer.write(hs.data_to_send())                      # Ya, PadA
    while isinstance(ev := hs.next_event(), NeedData):
        writer.write(hs.data_to_send())
        hs.receive_data(await reader.read(65536))        # next_event raises HandshakeError
    writer.write(hs.data_to_send())
    stream = hs.stream()                                 # RC4Stream or PlaintextStream
    incoming = ev.remainder                              # payload bytes already decrypted

An accepted connection: buffer its first bytes until :func:`classify_incoming` says
``PLAINTEXT`` (hand them to the wire protocol) or ``ENCRYPTED`` (feed them all to a
:class:`Receiver` built with the info hashes of the torrents being served). See
``docs/ARCHITECTURE.md`` for where the transport that runs this plugs into the engine.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn, Protocol

from torrent.errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

__all__ = [
    "DH_GENERATOR",
    "DH_PRIME",
    "INITIATOR_SYNC_LIMIT",
    "KEY_LENGTH",
    "MAX_PAD",
    "NEED_DATA",
    "RECEIVER_SYNC_LIMIT",
    "VC",
    "CryptoMethod",
    "Failure",
    "HandshakeDone",
    "HandshakeError",
    "IncomingKind",
    "Initiator",
    "NeedData",
    "PayloadStream",
    "PlaintextStream",
    "RC4Stream",
    "Receiver",
    "classify_incoming",
    "public_key",
    "req1_hash",
    "shared_secret",
    "skey_hash",
]

# -- the spec's constants -------------------------------------------------------------------------

#: The 768-bit prime of the key exchange (MSE spec, "P").
DH_PRIME: Final = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)
#: The generator (MSE spec, "G").
DH_GENERATOR: Final = 2
#: Bytes of a public key and of the shared secret S: 768 bits, big-endian, left-padded with zeros.
KEY_LENGTH: Final = 96
#: "Xa and Xb are a variable size random integers ... 160 bits is sufficient" (MSE spec).
PRIVATE_KEY_BITS: Final = 160
#: Longest PadA, PadB, PadC and PadD (MSE spec).
MAX_PAD: Final = 512
#: The verification constant: 8 zero bytes (MSE spec).
VC: Final = bytes(8)
#: "Discard the first 1024 bytes of the RC4 output" (MSE spec), in each direction.
RC4_DISCARD: Final = 1024
_HASH_LENGTH: Final = 20
#: The receiver drops a connection whose HASH('req1', S) does not end within this many bytes.
RECEIVER_SYNC_LIMIT: Final = KEY_LENGTH + MAX_PAD + _HASH_LENGTH  # 628
#: The initiator drops a connection whose ENCRYPT(VC) does not end within this many bytes.
INITIATOR_SYNC_LIMIT: Final = KEY_LENGTH + MAX_PAD + len(VC)  # 616
#: Longest initial payload: its length travels in two bytes.
MAX_INITIAL_PAYLOAD: Final = 0xFFFF
_PROTOCOL_PREFIX: Final = b"\x13BitTorrent protocol"  # BEP 3: pstrlen, pstr


class CryptoMethod(enum.IntFlag):
    """Bits of ``crypto_provide`` / ``crypto_select`` (MSE spec)."""

    PLAINTEXT = 0x01  # only the handshake is obfuscated; the payload stream is sent as is
    RC4 = 0x02


_KNOWN_METHODS: Final = CryptoMethod.PLAINTEXT | CryptoMethod.RC4


class Failure(enum.Enum):
    """Why a handshake was dropped: one value per counted reason."""

    BAD_PUBLIC_KEY = "public key out of range"
    NO_SYNC_HASH = f"no HASH('req1', S) within {RECEIVER_SYNC_LIMIT} bytes"
    UNKNOWN_SKEY = "the req2 ^ req3 hash matches no torrent of ours"
    BAD_VC = "verification constant is not zero"
    NO_VC = f"no encrypted verification constant within {INITIATOR_SYNC_LIMIT} bytes"
    NO_COMMON_METHOD = "no crypto method in common"
    BAD_SELECT = "crypto_select is not exactly one method we offered"
    BAD_PAD_LENGTH = f"padding longer than {MAX_PAD} bytes"
    CLOSED = "connection closed during the handshake"


class HandshakeError(RemoteProtocolError):
    """The peer broke the MSE handshake: drop the connection.

    Attributes:
        reason: which rule it broke (count these).
    """

    def __init__(self, reason: Failure, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"MSE handshake: {reason.value}" + (f" ({detail})" if detail else ""))


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedData:
    """Returned by ``next_event()`` until more bytes arrive (type of :data:`NEED_DATA`)."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """The handshake succeeded; the connection now runs through the machine's ``stream()``.

    Attributes:
        method: the crypto method B selected for the payload stream.
        skey: the info hash both sides proved they know.
        initial_payload: the initiator's IA, decrypted (the receiver's event); always ``b""``
            on the initiator's side (B sends no IA).
        remainder: payload-stream bytes that arrived behind the handshake, already decrypted.
            Feed them to the wire protocol before anything read later.
    """

    method: CryptoMethod
    skey: bytes
    initial_payload: bytes
    remainder: bytes


Event = HandshakeDone | NeedData


# -- the primitives -------------------------------------------------------------------------------


def _sha1(*parts: bytes) -> bytes:
    h = hashlib.sha1()
    for part in parts:
        h.update(part)
    return h.digest()


def public_key(private_key: int) -> bytes:
    """``G ** X mod P`` as the 96 bytes sent on the wire."""
    return pow(DH_GENERATOR, private_key, DH_PRIME).to_bytes(KEY_LENGTH, "big")


def shared_secret(their_public_key: bytes, private_key: int) -> bytes | None:
    """S, the 96-byte shared secret, or ``None`` for a public key outside ``[2, P - 2]``.

    Such a key (0, 1, P - 1 or anything not below P) comes from no honest peer and would make S
    guessable, so it is refused.
    """
    y = int.from_bytes(their_public_key, "big")
    if not 1 < y < DH_PRIME - 1:
        return None
    return pow(y, private_key, DH_PRIME).to_bytes(KEY_LENGTH, "big")


def req1_hash(secret: bytes) -> bytes:
    """``HASH('req1', S)``: the receiver's synchronisation marker."""
    return _sha1(b"req1", secret)


def skey_hash(skey: bytes, secret: bytes) -> bytes:
    """``HASH('req2', SKEY) xor HASH('req3', S)``: names the torrent without revealing it."""
    return _xor(_sha1(b"req2", skey), _sha1(b"req3", secret))


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _rc4(key: bytes) -> CipherContext:
    """An RC4 keystream with its first :data:`RC4_DISCARD` bytes already thrown away.

    ``cryptography`` is imported by the first RC4 stream (about 10 ms): a process that
    never encrypts (most downloads from libtorrent settle on plaintext, a daemon of
    dormant seeds) does not pay for it at start-up.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher

    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    except ImportError:  # cryptography < 43 kept ARC4 among the primitives
        from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef,unused-ignore]
            ARC4,
        )

    ctx = Cipher(ARC4(key), mode=None).encryptor()
    ctx.update(bytes(RC4_DISCARD))
    return ctx


# -- payload streams ------------------------------------------------------------------------------


class PayloadStream(Protocol):
    """What a transport runs the connection through once the handshake is done."""

    @property
    def method(self) -> CryptoMethod: ...

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Bytes to write for ``data`` we send (same length)."""
        ...

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Plain bytes for ``data`` we read (same length)."""
        ...


class RC4Stream:
    """Both directions of an RC4 connection: OpenSSL's RC4, keystreams already past the discard.

    RC4 is a stream cipher: every call continues the keystream, so each direction must see
    every byte exactly once and in order (one stream object per connection).
    """

    __slots__ = ("_in", "_out")

    method: Final = CryptoMethod.RC4

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        """Args:
        send_key: RC4 key of what we send (``HASH('keyA', S, SKEY)`` for the initiator).
        receive_key: RC4 key of what we receive.
        """
        self._out = _rc4(send_key)
        self._in = _rc4(receive_key)

    @classmethod
    def for_role(cls, secret: bytes, skey: bytes, *, initiator: bool) -> RC4Stream:
        """The stream of one side: A sends with ``keyA`` and reads ``keyB``; B the reverse."""
        key_a = _sha1(b"keyA", secret, skey)
        key_b = _sha1(b"keyB", secret, skey)
        return cls(key_a, key_b) if initiator else cls(key_b, key_a)

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._out.update(data)

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._in.update(data)


class PlaintextStream:
    """The "plaintext" crypto method: after the handshake, bytes pass unchanged."""

    __slots__ = ()

    method: Final = CryptoMethod.PLAINTEXT

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        return data if type(data) is bytes else bytes(data)

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        return data if type(data) is bytes else bytes(data)


# -- telling incoming connections apart -----------------------------------------------------------


class IncomingKind(enum.Enum):
    """What :func:`classify_incoming` decided."""

    NEED_MORE = "need more bytes"
    PLAINTEXT = "plaintext BitTorrent handshake"
    ENCRYPTED = "MSE handshake"


def classify_incoming(data: bytes | bytearray | memoryview) -> IncomingKind:
    """What an accepted connection speaks, from its first bytes (nothing is consumed).

    A plaintext connection opens with ``\\x13BitTorrent protocol`` (BEP 3); anything else is taken
    for an MSE public key (random bytes: that they begin with those 20 bytes has a chance of
    2**-160). Until 20 bytes are there, a prefix of the protocol string is undecided.
    """
    n = min(len(data), len(_PROTOCOL_PREFIX))
    if bytes(data[:n]) != _PROTOCOL_PREFIX[:n]:
        return IncomingKind.ENCRYPTED
    return IncomingKind.PLAINTEXT if n == len(_PROTOCOL_PREFIX) else IncomingKind.NEED_MORE


# -- the handshake machines -----------------------------------------------------------------------


class _State(enum.Enum):
    # both roles
    READ_PUBLIC_KEY = "read their public key"
    DONE = "done"
    FAILED = "failed"
    # the initiator (A)
    SYNC_VC = "scan for ENCRYPT(VC)"
    READ_SELECT = "read crypto_select, len(PadD)"
    READ_PAD_D = "read PadD"
    # the receiver (B)
    SYNC_REQ1 = "scan for HASH('req1', S)"
    READ_SKEY = "read the SKEY hash, VC, crypto_provide, len(PadC)"
    READ_PAD_C = "read PadC, len(IA)"
    READ_IA = "read IA"


#: Legal moves of each role: a machine never takes a step outside its table.
_TRANSITIONS: Final[dict[bool, dict[_State, frozenset[_State]]]] = {
    True: {  # initiator
        _State.READ_PUBLIC_KEY: frozenset({_State.SYNC_VC}),
        _State.SYNC_VC: frozenset({_State.READ_SELECT}),
        _State.READ_SELECT: frozenset({_State.READ_PAD_D}),
        _State.READ_PAD_D: frozenset({_State.DONE}),
    },
    False: {  # receiver
        _State.READ_PUBLIC_KEY: frozenset({_State.SYNC_REQ1}),
        _State.SYNC_REQ1: frozenset({_State.READ_SKEY}),
        _State.READ_SKEY: frozenset({_State.READ_PAD_C}),
        _State.READ_PAD_C: frozenset({_State.READ_IA}),
        _State.READ_IA: frozenset({_State.DONE}),
    },
}


def _check_pad(max_pad: int) -> None:
    if not 0 <= max_pad <= MAX_PAD:
        raise LocalProtocolError(f"max_pad must be within 0..{MAX_PAD}, got {max_pad}")


class _Handshake:
    """What both roles share: the receive buffer, the output, the states, the failure rule."""

    _initiator: bool

    def __init__(self, *, max_pad: int, entropy: Callable[[int], bytes]) -> None:
        _check_pad(max_pad)
        self._max_pad = max_pad
        self._entropy = entropy
        self._private_key = int.from_bytes(entropy(PRIVATE_KEY_BITS // 8), "big")
        self._buf = bytearray()
        self._eof = False
        self._out = bytearray()
        self._state = _State.READ_PUBLIC_KEY
        self._error: HandshakeError | None = None
        self._secret = b""
        self._skey = b""
        self._rc4: RC4Stream | None = None
        self._method: CryptoMethod | None = None
        self._wanted = 0  # length of the next fixed-size field, in states that read one
        self._done_reported = False

    # -- public API ------------------------------------------------------------------------------

    @property
    def failure(self) -> Failure | None:
        """Why the handshake failed, or ``None`` while it has not."""
        return self._error.reason if self._error else None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed the connection.

        Raises:
            LocalProtocolError: data after EOF, or after the handshake finished (from then on,
                bytes go through :meth:`stream`).
        """
        if self._state is _State.DONE:
            raise LocalProtocolError("the MSE handshake is done: decrypt further bytes with stream()")
        if self._eof:
            if data:
                raise LocalProtocolError("received data after the end of the stream")
            return
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_event(self) -> Event:
        """Advance the handshake as far as the buffered bytes allow.

        Returns:
            :data:`NEED_DATA`, or :class:`HandshakeDone` once (then call :meth:`stream`).

        Raises:
            HandshakeError: the peer broke the handshake (see :class:`Failure`); raised again on
                every later call.
            LocalProtocolError: called again after :class:`HandshakeDone` was returned.
        """
        if self._error is not None:
            raise self._error
        if self._done_reported:
            raise LocalProtocolError("the MSE handshake already finished")
        steps = self._steps()
        try:
            while self._state is not _State.DONE:
                if not steps[self._state]():
                    if self._eof:
                        self._fail(Failure.CLOSED, f"while waiting to {self._state.value}")
                    return NEED_DATA
        except HandshakeError as exc:
            self._state = _State.FAILED
            self._error = exc
            raise
        self._done_reported = True
        return self._finish()

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer since the last call (possibly ``b""``)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def stream(self) -> PayloadStream:
        """The payload stream to run the connection through after :class:`HandshakeDone`.

        Raises:
            LocalProtocolError: the handshake is not done.
        """
        if self._state is not _State.DONE or self._method is None or self._rc4 is None:
            raise LocalProtocolError("the MSE handshake is not done")
        return self._rc4 if self._method is CryptoMethod.RC4 else PlaintextStream()

    # -- shared steps ----------------------------------------------------------------------------

    def _steps(self) -> dict[_State, Callable[[], bool]]:
        raise NotImplementedError

    def _goto(self, state: _State, wanted: int = 0) -> None:
        if state not in _TRANSITIONS[self._initiator].get(self._state, frozenset()):
            raise LocalProtocolError(f"MSE: no move from {self._state.name} to {state.name}")
        self._state = state
        self._wanted = wanted

    def _fail(self, reason: Failure, detail: str = "") -> NoReturn:
        raise HandshakeError(reason, detail)

    def _take(self, n: int) -> bytes | None:
        """The next ``n`` buffered bytes, consumed; ``None`` (nothing consumed) until they are there."""
        if len(self._buf) < n:
            return None
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def _pad(self, *, random_content: bool) -> bytes:
        length = int.from_bytes(self._entropy(2), "big") % (self._max_pad + 1)
        # PadA/PadB hide the key exchange's length; PadC/PadD are encrypted and, the spec
        # says, "for padding-only usage in the current version they should be zeroed".
        return self._entropy(length) if random_content else bytes(length)

    def _read_their_key(self) -> bool:
        key = self._take(KEY_LENGTH)
        if key is None:
            return False
        secret = shared_secret(key, self._private_key)
        if secret is None:
            self._fail(Failure.BAD_PUBLIC_KEY)
        self._secret = secret
        self._on_secret()
        return True

    def _on_secret(self) -> None:
        raise NotImplementedError

    def _scan(self, marker: bytes, bound: int, failure: Failure) -> bool:
        """Consume up to and including ``marker``, which must end within ``bound`` buffered bytes."""
        at = self._buf.find(marker, 0, bound)
        if at < 0:
            if len(self._buf) >= bound:
                self._fail(failure)
            return False
        del self._buf[: at + len(marker)]
        return True

    def _rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        assert self._rc4 is not None
        return self._rc4.decrypt(rest) if rest and self._method is CryptoMethod.RC4 else rest

    def _finish(self) -> HandshakeDone:
        raise NotImplementedError


class Initiator(_Handshake):
    """Side A of the MSE handshake: we dialled the peer and know the torrent (``skey``)."""

    _initiator = True

    def __init__(
        self,
        skey: bytes,
        *,
        initial_payload: bytes = b"",
        provide: CryptoMethod = CryptoMethod.RC4,
        max_pad: int = MAX_PAD,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        """Start the handshake: ``data_to_send()`` then returns ``Ya, PadA``.

        Args:
            skey: the info hash of the torrent this connection is for (20 bytes).
            initial_payload: IA, sent encrypted with step 3 (normally the BitTorrent handshake,
                which saves a round trip); may be empty.
            provide: the methods we accept for the payload stream (``crypto_provide``).
            max_pad: longest random padding we send (0..512; tests use 0).
            entropy: source of random bytes (private key, padding).

        Raises:
            LocalProtocolError: a bad argument.
        """
        if len(skey) != 20:
            raise LocalProtocolError("skey (the info hash) must be 20 bytes")
        if len(initial_payload) > MAX_INITIAL_PAYLOAD:
            raise LocalProtocolError(f"initial payload longer than {MAX_INITIAL_PAYLOAD} bytes")
        provide = CryptoMethod(provide) & _KNOWN_METHODS
        if not provide:
            raise LocalProtocolError("provide at least one crypto method")
        super().__init__(max_pad=max_pad, entropy=entropy)
        self._skey = bytes(skey)
        self._ia = bytes(initial_payload)
        self._provide = provide
        self._vc_marker = b""
        self._pad_d = 0
        self._out += public_key(self._private_key) + self._pad(random_content=True)

    def _steps(self) -> dict[_State, Callable[[], bool]]:
        return {
            _State.READ_PUBLIC_KEY: self._read_their_key,
            _State.SYNC_VC: self._sync_vc,
            _State.READ_SELECT: self._read_select,
            _State.READ_PAD_D: self._read_pad_d,
        }

    def _on_secret(self) -> None:
        rc4 = RC4Stream.for_role(self._secret, self._skey, initiator=True)
        self._rc4 = rc4
        pad_c = self._pad(random_content=False)
        self._out += req1_hash(self._secret) + skey_hash(self._skey, self._secret)
        self._out += rc4.encrypt(
            VC
            + int(self._provide).to_bytes(4, "big")
            + len(pad_c).to_bytes(2, "big")
            + pad_c
            + len(self._ia).to_bytes(2, "big")
            + self._ia
        )
        # B's stream starts with ENCRYPT(VC): the first 8 bytes of its keystream. Taking them
        # from our decrypting context leaves it just past the VC, where the scan consumes to.
        self._vc_marker = rc4.decrypt(VC)
        self._goto(_State.SYNC_VC)

    def _sync_vc(self) -> bool:
        if not self._scan(self._vc_marker, INITIATOR_SYNC_LIMIT - KEY_LENGTH, Failure.NO_VC):
            return False
        self._goto(_State.READ_SELECT, 4 + 2)
        return True

    def _read_select(self) -> bool:
        raw = self._take(self._wanted)
        if raw is None:
            return False
        assert self._rc4 is not None
        field = self._rc4.decrypt(raw)
        select = int.from_bytes(field[:4], "big")
        pad_len = int.from_bytes(field[4:6], "big")
        if select not in (CryptoMethod.PLAINTEXT, CryptoMethod.RC4) or not select & self._provide:
            self._fail(Failure.BAD_SELECT, f"crypto_select {select:#x}, we provided {int(self._provide):#x}")
        if pad_len > MAX_PAD:
            self._fail(Failure.BAD_PAD_LENGTH, f"len(PadD) = {pad_len}")
        self._method = CryptoMethod(select)
        self._goto(_State.READ_PAD_D, pad_len)
        return True

    def _read_pad_d(self) -> bool:
        pad = self._take(self._wanted)
        if pad is None:
            return False
        assert self._rc4 is not None
        self._rc4.decrypt(pad)  # keeps the keystream in step; the content means nothing
        self._goto(_State.DONE)
        return True

    def _finish(self) -> HandshakeDone:
        assert self._method is not None
        return HandshakeDone(self._method, self._skey, b"", self._rest())


SkeyCandidates = Collection[bytes] | Callable[[], Iterable[bytes]]


class Receiver(_Handshake):
    """Side B of the MSE handshake: the peer dialled us; the torrent is found from its hashes."""

    _initiator = False

    def __init__(
        self,
        skeys: SkeyCandidates,
        *,
        allowed: CryptoMethod = CryptoMethod.RC4 | CryptoMethod.PLAINTEXT,
        prefer: CryptoMethod = CryptoMethod.RC4,
        max_pad: int = MAX_PAD,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        """A receiver; it sends ``Yb, PadB`` once it has read the initiator's key.

        Args:
            skeys: the info hashes of the torrents we serve, or a callable returning them when
                asked (asked once per connection, after the initiator proved it knows S; costs
                one SHA-1 per candidate).
            allowed: the methods we accept for the payload stream.
            prefer: the method chosen when the initiator provides both.
            max_pad: longest random padding we send (0..512; tests use 0).
            entropy: source of random bytes (private key, padding).

        Raises:
            LocalProtocolError: a bad argument.
        """
        if isinstance(skeys, bytes | bytearray | memoryview):
            raise LocalProtocolError("skeys is a collection of info hashes, not one info hash")
        allowed = CryptoMethod(allowed) & _KNOWN_METHODS
        if not allowed:
            raise LocalProtocolError("allow at least one crypto method")
        if prefer not in (CryptoMethod.RC4, CryptoMethod.PLAINTEXT):
            raise LocalProtocolError("prefer exactly one crypto method")
        super().__init__(max_pad=max_pad, entropy=entropy)
        self._skeys = skeys
        self._allowed = allowed
        self._prefer = prefer
        self._ia = b""

    def _steps(self) -> dict[_State, Callable[[], bool]]:
        return {
            _State.READ_PUBLIC_KEY: self._read_their_key,
            _State.SYNC_REQ1: self._sync_req1,
            _State.READ_SKEY: self._read_skey,
            _State.READ_PAD_C: self._read_pad_c,
            _State.READ_IA: self._read_ia,
        }

    def _on_secret(self) -> None:
        self._out += public_key(self._private_key) + self._pad(random_content=True)
        self._goto(_State.SYNC_REQ1)

    def _sync_req1(self) -> bool:
        if not self._scan(req1_hash(self._secret), RECEIVER_SYNC_LIMIT - KEY_LENGTH, Failure.NO_SYNC_HASH):
            return False
        self._goto(_State.READ_SKEY, _HASH_LENGTH + len(VC) + 4 + 2)
        return True

    def _find_skey(self, obfuscated: bytes) -> bytes | None:
        wanted = _xor(obfuscated, _sha1(b"req3", self._secret))
        candidates = self._skeys() if callable(self._skeys) else self._skeys
        for skey in candidates:
            if _sha1(b"req2", skey) == wanted:
                return bytes(skey)
        return None

    def _read_skey(self) -> bool:
        raw = self._take(self._wanted)
        if raw is None:
            return False
        skey = self._find_skey(raw[:_HASH_LENGTH])
        if skey is None:
            self._fail(Failure.UNKNOWN_SKEY)
        self._skey = skey
        rc4 = RC4Stream.for_role(self._secret, skey, initiator=False)
        self._rc4 = rc4
        field = rc4.decrypt(raw[_HASH_LENGTH:])
        if field[:8] != VC:
            self._fail(Failure.BAD_VC)
        provide = CryptoMethod(int.from_bytes(field[8:12], "big") & _KNOWN_METHODS)
        pad_len = int.from_bytes(field[12:14], "big")
        common = provide & self._allowed
        if not common:
            self._fail(
                Failure.NO_COMMON_METHOD, f"they provide {int(provide):#x}, we allow {int(self._allowed):#x}"
            )
        if pad_len > MAX_PAD:
            self._fail(Failure.BAD_PAD_LENGTH, f"len(PadC) = {pad_len}")
        self._method = self._prefer if self._prefer in common else CryptoMethod(common)
        # Step 4 can go now: it depends on nothing that is still to come.
        pad_d = self._pad(random_content=False)
        self._out += rc4.encrypt(
            VC + int(self._method).to_bytes(4, "big") + len(pad_d).to_bytes(2, "big") + pad_d
        )
        self._goto(_State.READ_PAD_C, pad_len + 2)
        return True

    def _read_pad_c(self) -> bool:
        raw = self._take(self._wanted)
        if raw is None:
            return False
        assert self._rc4 is not None
        field = self._rc4.decrypt(raw)
        self._goto(_State.READ_IA, int.from_bytes(field[-2:], "big"))
        return True

    def _read_ia(self) -> bool:
        raw = self._take(self._wanted)
        if raw is None:
            return False
        assert self._rc4 is not None
        self._ia = self._rc4.decrypt(raw) if raw else b""  # IA is RC4 whatever the method
        self._goto(_State.DONE)
        return True

    def _finish(self) -> HandshakeDone:
        assert self._method is not None
        return HandshakeDone(self._method, self._skey, self._ia, self._rest())
