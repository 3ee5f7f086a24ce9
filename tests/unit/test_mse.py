"""The MSE/PE handshake machines and payload streams, driven over a fake link with literal bytes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mse_helpers import (
    INFO_HASH,
    OTHER_HASH,
    bytewise,
    entropy,
    fixed_entropy,
    pump,
    random_split,
    rc4_reference,
    whole,
)
from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.mse import (
    DH_PRIME,
    MAX_PAD,
    NEED_DATA,
    CryptoMethod,
    Failure,
    HandshakeDone,
    HandshakeError,
    IncomingKind,
    Initiator,
    PlaintextStream,
    RC4Stream,
    Receiver,
    classify_incoming,
    public_key,
    req1_hash,
    shared_secret,
    skey_hash,
)
from torrent.proto.wire import encode_handshake

RC4 = CryptoMethod.RC4
PLAIN = CryptoMethod.PLAINTEXT
BOTH = RC4 | PLAIN
BT_HANDSHAKE = encode_handshake(INFO_HASH, b"-PT0001-abcdefghijkl")


def sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


def expect(reason: Failure, call: object) -> HandshakeError:
    """Call ``call()``, which must raise HandshakeError(reason), and check the error sticks."""
    assert callable(call)
    with pytest.raises(HandshakeError) as info:
        call()
    assert info.value.reason is reason
    assert isinstance(info.value, RemoteProtocolError)
    return info.value


# -- RC4 and the keys ------------------------------------------------------------------------------


def test_reference_rc4_matches_the_published_vector() -> None:
    # The classic test vector (Key / Plaintext) pins the reference the next tests rely on.
    assert rc4_reference(b"Key", b"Plaintext").hex() == "bbf316e8d940af0ad3"


def test_rc4_stream_is_openssl_rc4_with_the_first_1024_bytes_discarded() -> None:
    send_key, receive_key = b"s" * 20, b"r" * 20
    stream = RC4Stream(send_key, receive_key)
    data = bytes(range(256)) * 9
    first, second = stream.encrypt(data[:1000]), stream.encrypt(memoryview(data)[1000:])
    assert first + second == rc4_reference(send_key, data, discard=1024)
    assert stream.decrypt(bytearray(data)) == rc4_reference(receive_key, data, discard=1024)


def test_for_role_keys_are_hash_keyA_and_keyB_of_s_and_skey() -> None:
    secret = bytes(range(96))
    key_a = sha1(b"keyA", secret, INFO_HASH)
    key_b = sha1(b"keyB", secret, INFO_HASH)
    a = RC4Stream.for_role(secret, INFO_HASH, initiator=True)
    b = RC4Stream.for_role(secret, INFO_HASH, initiator=False)
    assert a.encrypt(b"hello") == rc4_reference(key_a, b"hello", discard=1024)
    assert b.encrypt(b"hello") == rc4_reference(key_b, b"hello", discard=1024)
    # A's sending keystream is B's receiving one, and the other way round.
    assert b.decrypt(rc4_reference(key_a, b"A to B", discard=1024)) == b"A to B"
    assert a.decrypt(rc4_reference(key_b, b"B to A", discard=1024)) == b"B to A"


def test_plaintext_stream_passes_bytes_unchanged() -> None:
    s = PlaintextStream()
    assert s.method is PLAIN
    assert s.encrypt(b"abc") == b"abc"
    assert s.decrypt(memoryview(b"xyz")) == b"xyz"


def test_dh_primitives() -> None:
    assert public_key(1) == bytes(95) + b"\x02"
    # (G^a)^b == (G^b)^a, 96 bytes, big-endian
    a, b = 0xA11CE, 0xB0B
    s = shared_secret(public_key(a), b)
    assert s is not None
    assert len(s) == 96
    assert s == shared_secret(public_key(b), a) == pow(2, a * b, DH_PRIME).to_bytes(96, "big")
    for bad in (0, 1, DH_PRIME - 1, DH_PRIME, (1 << 768) - 1):
        assert shared_secret(bad.to_bytes(96, "big"), 5) is None
    assert req1_hash(s) == sha1(b"req1", s)
    assert skey_hash(INFO_HASH, s) == bytes(
        x ^ y for x, y in zip(sha1(b"req2", INFO_HASH), sha1(b"req3", s), strict=True)
    )


# -- exact bytes on the wire -----------------------------------------------------------------------


def test_initiator_bytes_follow_the_spec_field_by_field() -> None:
    xa, xb = 7, 11
    a = Initiator(INFO_HASH, initial_payload=BT_HANDSHAKE, provide=BOTH, max_pad=0, entropy=fixed_entropy(xa))
    assert a.data_to_send() == (2**xa).to_bytes(96, "big")  # step 1: Ya, no PadA
    assert a.next_event() is NEED_DATA
    assert a.data_to_send() == b""

    a.receive_data(public_key(xb))  # step 2: Yb, no PadB
    assert a.next_event() is NEED_DATA
    s = pow(2, xa * xb, DH_PRIME).to_bytes(96, "big")
    encrypted = (
        bytes(8)  # VC
        + b"\x00\x00\x00\x03"  # crypto_provide: plaintext | RC4
        + b"\x00\x00"  # len(PadC)
        + b"\x00\x44"  # len(IA) = 68
        + BT_HANDSHAKE
    )
    expected = (
        sha1(b"req1", s)
        + bytes(x ^ y for x, y in zip(sha1(b"req2", INFO_HASH), sha1(b"req3", s), strict=True))
        + rc4_reference(sha1(b"keyA", s, INFO_HASH), encrypted, discard=1024)
    )
    assert a.data_to_send() == expected


def test_receiver_bytes_follow_the_spec_field_by_field() -> None:
    xa, xb = 13, 17
    a = Initiator(INFO_HASH, initial_payload=b"IA!", provide=BOTH, max_pad=0, entropy=fixed_entropy(xa))
    b = Receiver([OTHER_HASH, INFO_HASH], prefer=RC4, max_pad=0, entropy=fixed_entropy(xb))
    b.receive_data(a.data_to_send())
    assert b.next_event() is NEED_DATA
    assert b.data_to_send() == (2**xb).to_bytes(96, "big")  # step 2: Yb, no PadB
    a.receive_data(public_key(xb))
    a.next_event()
    b.receive_data(a.data_to_send())
    done = b.next_event()
    assert done == HandshakeDone(method=RC4, skey=INFO_HASH, initial_payload=b"IA!", remainder=b"")
    s = pow(2, xa * xb, DH_PRIME).to_bytes(96, "big")
    step4 = bytes(8) + b"\x00\x00\x00\x02" + b"\x00\x00"  # VC, crypto_select = RC4, len(PadD)
    assert b.data_to_send() == rc4_reference(sha1(b"keyB", s, INFO_HASH), step4, discard=1024)


# -- whole handshakes ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [RC4, PLAIN])
@pytest.mark.parametrize("ia", [b"", BT_HANDSHAKE])
@pytest.mark.parametrize("split", [whole, bytewise, random_split(3)], ids=["whole", "bytewise", "random"])
@pytest.mark.parametrize("max_pad", [0, MAX_PAD])
def test_handshake_completes(method: CryptoMethod, ia: bytes, split: object, max_pad: int) -> None:
    a = Initiator(INFO_HASH, initial_payload=ia, provide=method, max_pad=max_pad, entropy=entropy(1))
    b = Receiver({INFO_HASH, OTHER_HASH}, allowed=method, max_pad=max_pad, entropy=entropy(2))
    out = pump(a, b, split)  # type: ignore[arg-type]
    assert out.receiver == HandshakeDone(method, INFO_HASH, ia, b"")
    assert out.initiator == HandshakeDone(method, INFO_HASH, b"", b"")
    assert a.done
    assert b.done
    assert a.failure is None
    assert b.failure is None
    sa, sb = a.stream(), b.stream()
    assert sa.method is sb.method is method
    for i in range(3):  # both directions, several messages: the keystreams stay in step
        msg = bytes([i]) * (1000 * i + 1)
        wire = sa.encrypt(msg)
        assert (wire == msg) is (method is PLAIN)
        assert sb.decrypt(wire) == msg
        assert sa.decrypt(sb.encrypt(msg[::-1])) == msg[::-1]


@pytest.mark.parametrize(
    ("provide", "allowed", "prefer", "chosen"),
    [
        (BOTH, BOTH, RC4, RC4),
        (BOTH, BOTH, PLAIN, PLAIN),
        (BOTH, RC4, PLAIN, RC4),
        (BOTH, PLAIN, RC4, PLAIN),
        (RC4, BOTH, PLAIN, RC4),
        (PLAIN, BOTH, RC4, PLAIN),
    ],
)
def test_crypto_select(
    provide: CryptoMethod, allowed: CryptoMethod, prefer: CryptoMethod, chosen: CryptoMethod
) -> None:
    a = Initiator(INFO_HASH, provide=provide, entropy=entropy(5))
    b = Receiver([INFO_HASH], allowed=allowed, prefer=prefer, entropy=entropy(6))
    out = pump(a, b)
    assert out.initiator is not None
    assert out.receiver is not None
    assert out.initiator.method is out.receiver.method is chosen


def test_receiver_skeys_may_be_a_callable_asked_when_needed() -> None:
    served: list[bytes] = []
    a = Initiator(INFO_HASH, entropy=entropy(7))
    b = Receiver(lambda: iter(served), entropy=entropy(8))
    served += [OTHER_HASH, INFO_HASH]  # the torrent appears after the connection was accepted
    assert pump(a, b).receiver is not None


def test_payload_behind_the_handshake_comes_out_as_the_remainder() -> None:
    a = Initiator(INFO_HASH, initial_payload=BT_HANDSHAKE, entropy=entropy(9))
    b = Receiver([INFO_HASH], entropy=entropy(10))
    b.receive_data(a.data_to_send())
    assert b.next_event() is NEED_DATA
    a.receive_data(b.data_to_send())
    assert a.next_event() is NEED_DATA
    step3 = a.data_to_send()
    # B gets all of step 3 but IA's last byte: it has answered with step 4 already ...
    b.receive_data(step3[:-1])
    assert b.next_event() is NEED_DATA
    step4 = b.data_to_send()
    assert step4
    # ... and A, done, sends its first message, which reaches B in one read with that byte.
    a.receive_data(step4)
    done_a = a.next_event()
    assert isinstance(done_a, HandshakeDone)
    assert done_a.remainder == b""
    b.receive_data(step3[-1:] + a.stream().encrypt(b"\x00\x00\x00\x01\x02"))
    done_b = b.next_event()
    assert isinstance(done_b, HandshakeDone)
    assert done_b.initial_payload == BT_HANDSHAKE
    assert done_b.remainder == b"\x00\x00\x00\x01\x02"
    # B's own first bytes ride along with step 4 the same way.
    a2 = Initiator(INFO_HASH, entropy=entropy(11))
    b2 = Receiver([INFO_HASH], entropy=entropy(12))
    b2.receive_data(a2.data_to_send())
    b2.next_event()
    a2.receive_data(b2.data_to_send())
    a2.next_event()
    b2.receive_data(a2.data_to_send())
    assert isinstance(b2.next_event(), HandshakeDone)
    a2.receive_data(b2.data_to_send() + b2.stream().encrypt(BT_HANDSHAKE))
    done_a2 = a2.next_event()
    assert isinstance(done_a2, HandshakeDone)
    assert done_a2.remainder == BT_HANDSHAKE


# -- bad input ------------------------------------------------------------------------------------


def test_unknown_skey_is_refused_and_the_error_sticks() -> None:
    a = Initiator(OTHER_HASH, entropy=entropy(13))
    b = Receiver([INFO_HASH], entropy=entropy(14))
    with pytest.raises(HandshakeError) as info:
        pump(a, b)
    assert info.value.reason is Failure.UNKNOWN_SKEY
    assert b.failure is Failure.UNKNOWN_SKEY
    expect(Failure.UNKNOWN_SKEY, b.next_event)
    expect(Failure.UNKNOWN_SKEY, b.next_event)
    # The receiver has sent its key only: it never answers a torrent it does not serve.
    assert b.data_to_send() == b""


def test_no_common_method_is_refused_and_the_initiator_sees_the_close() -> None:
    a = Initiator(INFO_HASH, provide=PLAIN, entropy=entropy(15))
    b = Receiver([INFO_HASH], allowed=RC4, entropy=entropy(16))
    with pytest.raises(HandshakeError) as info:
        pump(a, b)
    assert info.value.reason is Failure.NO_COMMON_METHOD
    a.receive_data(b"")  # the receiver hangs up
    expect(Failure.CLOSED, a.next_event)


def test_garbage_instead_of_a_handshake() -> None:
    noise = entropy(17)(700)
    b = Receiver([INFO_HASH], entropy=entropy(18))
    b.receive_data(b"\x01" + noise)  # a key in range, then no req1 hash anywhere
    expect(Failure.NO_SYNC_HASH, b.next_event)
    a = Initiator(INFO_HASH, entropy=entropy(19))
    a.receive_data(b"\x01" + noise)
    expect(Failure.NO_VC, a.next_event)


@pytest.mark.parametrize("key", [0, 1, DH_PRIME - 1, DH_PRIME, (1 << 768) - 1])
def test_public_key_out_of_range(key: int) -> None:
    for machine in (Initiator(INFO_HASH, entropy=entropy(20)), Receiver([INFO_HASH], entropy=entropy(21))):
        machine.receive_data(key.to_bytes(96, "big"))
        expect(Failure.BAD_PUBLIC_KEY, machine.next_event)


@pytest.mark.parametrize(("pad_a", "ok"), [(MAX_PAD, True), (MAX_PAD + 1, False)])
def test_receiver_finds_req1_only_within_628_bytes(pad_a: int, ok: bool) -> None:
    a = Initiator(INFO_HASH, max_pad=0, entropy=entropy(22))
    b = Receiver([INFO_HASH], entropy=entropy(23))
    ya = a.data_to_send()
    b.receive_data(ya + bytes(pad_a))  # PadA, made longer than A would send it
    assert b.next_event() is NEED_DATA
    a.receive_data(b.data_to_send())
    a.next_event()
    b.receive_data(a.data_to_send())
    if ok:
        assert isinstance(b.next_event(), HandshakeDone)
    else:
        expect(Failure.NO_SYNC_HASH, b.next_event)


def test_receiver_gives_up_as_soon_as_628_bytes_hold_no_req1() -> None:
    b = Receiver([INFO_HASH], entropy=entropy(24))
    b.receive_data(b"\x05" * (96 + 512 + 19))
    assert b.next_event() is NEED_DATA  # the hash could still end at byte 628
    b.receive_data(b"\x05")
    expect(Failure.NO_SYNC_HASH, b.next_event)


@pytest.mark.parametrize(("pad_b", "ok"), [(MAX_PAD, True), (MAX_PAD + 1, False)])
def test_initiator_finds_vc_only_within_616_bytes(pad_b: int, ok: bool) -> None:
    a = Initiator(INFO_HASH, entropy=entropy(25))
    b = Receiver([INFO_HASH], max_pad=0, entropy=entropy(26))
    b.receive_data(a.data_to_send())
    b.next_event()
    yb = b.data_to_send()
    a.receive_data(yb + bytes(pad_b))  # PadB, longer than B would send it
    assert a.next_event() is NEED_DATA
    b.receive_data(a.data_to_send())
    assert isinstance(b.next_event(), HandshakeDone)
    a.receive_data(b.data_to_send())
    if ok:
        assert isinstance(a.next_event(), HandshakeDone)
    else:
        expect(Failure.NO_VC, a.next_event)


def test_initiator_gives_up_as_soon_as_616_bytes_hold_no_vc() -> None:
    a = Initiator(INFO_HASH, entropy=entropy(27))
    a.receive_data(b"\x05" * (96 + 512 + 7))
    assert a.next_event() is NEED_DATA
    a.receive_data(b"\x05")
    expect(Failure.NO_VC, a.next_event)


def _step3_for(b: Receiver, xa: int, encrypted_part: bytes, skey: bytes = INFO_HASH) -> bytes:
    """Hand-made step 3 from a peer with private key ``xa``, after B's step 2 was read."""
    b.receive_data(public_key(xa))
    assert b.next_event() is NEED_DATA
    yb = b.data_to_send()[:96]
    s = shared_secret(yb, xa)
    assert s is not None
    rc4 = RC4Stream.for_role(s, skey, initiator=True)
    return req1_hash(s) + skey_hash(skey, s) + rc4.encrypt(encrypted_part)


def test_receiver_refuses_a_wrong_vc_and_a_long_pad_c() -> None:
    b = Receiver([INFO_HASH], entropy=entropy(28))
    b.receive_data(_step3_for(b, 99, b"\x00" * 7 + b"\x01" + b"\x00\x00\x00\x02" + b"\x00\x00" + b"\x00\x00"))
    expect(Failure.BAD_VC, b.next_event)
    b = Receiver([INFO_HASH], entropy=entropy(29))
    b.receive_data(_step3_for(b, 99, bytes(8) + b"\x00\x00\x00\x02" + (MAX_PAD + 1).to_bytes(2, "big")))
    expect(Failure.BAD_PAD_LENGTH, b.next_event)


def test_receiver_ignores_unknown_method_bits_and_reads_a_long_ia() -> None:
    b = Receiver([INFO_HASH], entropy=entropy(30))
    ia = bytes(range(256)) * 200  # 51,200 bytes
    pad_c = bytes(MAX_PAD)
    step3 = _step3_for(
        b, 99, bytes(8) + b"\xff\xff\xff\xfe" + b"\x02\x00" + pad_c + len(ia).to_bytes(2, "big") + ia
    )
    b.receive_data(step3)
    done = b.next_event()
    assert isinstance(done, HandshakeDone)
    assert done.method is RC4
    assert done.initial_payload == ia


def _step4_for(a: Initiator, xb: int, encrypted_part: bytes) -> bytes:
    """Hand-made step 2 and 4 from a receiver with private key ``xb``."""
    ya = a.data_to_send()[:96]
    s = shared_secret(ya, xb)
    assert s is not None
    rc4 = RC4Stream.for_role(s, INFO_HASH, initiator=False)
    return public_key(xb) + rc4.encrypt(encrypted_part)


@pytest.mark.parametrize("select", [0, 3, 1, 4, 0x102])
def test_initiator_refuses_a_select_it_did_not_offer(select: int) -> None:
    a = Initiator(INFO_HASH, provide=RC4, entropy=entropy(31))
    a.receive_data(_step4_for(a, 77, bytes(8) + select.to_bytes(4, "big") + b"\x00\x00"))
    expect(Failure.BAD_SELECT, a.next_event)


def test_initiator_refuses_a_long_pad_d_and_reads_one_of_512() -> None:
    a = Initiator(INFO_HASH, entropy=entropy(32))
    a.receive_data(_step4_for(a, 77, bytes(8) + b"\x00\x00\x00\x02" + (MAX_PAD + 1).to_bytes(2, "big")))
    expect(Failure.BAD_PAD_LENGTH, a.next_event)
    a = Initiator(INFO_HASH, entropy=entropy(33))
    a.receive_data(_step4_for(a, 77, bytes(8) + b"\x00\x00\x00\x02" + b"\x02\x00" + bytes(512) + b"payload"))
    done = a.next_event()
    assert isinstance(done, HandshakeDone)
    assert done.remainder == b"payload"


def test_eof_part_way_fails_with_closed() -> None:
    a = Initiator(INFO_HASH, entropy=entropy(34))
    b = Receiver([INFO_HASH], entropy=entropy(35))
    b.receive_data(a.data_to_send()[:50])
    assert b.next_event() is NEED_DATA
    b.receive_data(b"")
    err = expect(Failure.CLOSED, b.next_event)
    assert "public key" in str(err)
    b.receive_data(b"")  # a second EOF is harmless
    expect(Failure.CLOSED, b.next_event)


# -- using the API wrongly is a bug (LocalProtocolError) ------------------------------------------


def test_misuse_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        Initiator(b"short")
    with pytest.raises(LocalProtocolError):
        Initiator(INFO_HASH, max_pad=MAX_PAD + 1)
    with pytest.raises(LocalProtocolError):
        Initiator(INFO_HASH, initial_payload=bytes(65536))
    with pytest.raises(LocalProtocolError):
        Initiator(INFO_HASH, provide=CryptoMethod(0))
    with pytest.raises(LocalProtocolError):
        Receiver([INFO_HASH], allowed=CryptoMethod(0))
    with pytest.raises(LocalProtocolError):
        Receiver([INFO_HASH], prefer=BOTH)
    with pytest.raises(LocalProtocolError):
        Receiver(INFO_HASH)  # type: ignore[arg-type]
    a = Initiator(INFO_HASH, entropy=entropy(36))
    b = Receiver([INFO_HASH], entropy=entropy(37))
    with pytest.raises(LocalProtocolError):
        a.stream()
    pump(a, b)
    with pytest.raises(LocalProtocolError):
        a.receive_data(b"more")
    with pytest.raises(LocalProtocolError):
        b.next_event()
    c = Receiver([INFO_HASH])
    c.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"after the end")


# -- incoming connections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (b"", IncomingKind.NEED_MORE),
        (b"\x13", IncomingKind.NEED_MORE),
        (b"\x13BitTorrent proto", IncomingKind.NEED_MORE),
        (b"\x13BitTorrent protocol", IncomingKind.PLAINTEXT),
        (BT_HANDSHAKE, IncomingKind.PLAINTEXT),
        (b"\x14", IncomingKind.ENCRYPTED),
        (b"\x13BitTorrent Protocol", IncomingKind.ENCRYPTED),
        (public_key(12345), IncomingKind.ENCRYPTED),
    ],
)
def test_classify_incoming(first: bytes, kind: IncomingKind) -> None:
    assert classify_incoming(first) is kind
    assert classify_incoming(memoryview(first)) is kind


def test_cryptography_is_loaded_by_the_first_rc4_stream_not_by_the_engine() -> None:
    """A process that never encrypts does not pay for importing ``cryptography`` (about
    10 ms of every start-up); the first RC4 stream loads it and works."""
    script = (
        "import sys, torrent.engine.session, torrent.proto.mse as mse\n"
        "before = any(m.startswith('cryptography') for m in sys.modules)\n"
        "a, b = mse.RC4Stream(b'k' * 20, b'j' * 20), mse.RC4Stream(b'j' * 20, b'k' * 20)\n"
        "ok = b.decrypt(a.encrypt(b'payload')) == b'payload'\n"
        "print('LOADED', before, any(m.startswith('cryptography') for m in sys.modules), ok)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOADED False True True"
