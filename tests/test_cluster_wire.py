"""memberlist wire codec: golden bytes, round trips, packing, CRC, labels, keyring, LZW.

Golden vectors: derived by reading memberlist 0.2.2 ``net.go`` (the structs) and
hashicorp/go-msgpack 0.5.5 ``msgpack.go``/``encode.go`` (``MsgpackHandle{}`` without
``WriteExt``: strings and ``[]byte`` both as old-spec raw — fixraw ``a0|n``, else ``da`` +
uint16 —, nil slices as ``c0``, smallest integer forms, struct maps with keys *sorted* by
Go field name), then confirmed by running that exact code: Debian bookworm's
``golang-github-hashicorp-memberlist-dev`` 0.2.2 and ``golang-github-hashicorp-go-msgpack-dev``
0.5.5 (what the ``serf`` package links), built with Go 1.19, calling ``encode()``,
``makeCompoundMessage``, ``compressPayload`` and ``encryptPayload``. Serf's tags come from
``codec.NewEncoder(...).Encode(map[string]string)`` after the 255 magic byte.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainbridge.cluster.compress import LZWError, lzw_compress, lzw_decompress
from rainbridge.cluster.messages import (
    Ack,
    Alive,
    Dead,
    Err,
    IndirectPing,
    MessageType,
    Nack,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from rainbridge.cluster.wire import (
    Keyring,
    Skipped,
    StreamDecoder,
    WireConfig,
    WireError,
    decode_packet,
    decode_tags,
    encode_message,
    encode_packet,
    encode_stream,
    encode_tags,
    encode_user,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
K1 = bytes(range(16))
K2 = bytes(range(100, 124))
K3 = bytes(range(200, 232))

# -- golden vectors ------------------------------------------------------------------------

GOLDEN = [
    # ping{SeqNo:1, Node:"n1"}: 00 | fixmap 2 | "Node" "n1" | "SeqNo" 1 (keys sorted)
    (Ping(seq_no=1, node="n1"), "0082a44e6f6465a26e31a55365714e6f01"),
    # omitempty Source* present; SeqNo 70000 -> uint32 ce; SourceAddr 4-byte raw; port cd 1f0a
    (
        Ping(seq_no=70000, node="node-b", source=("127.0.0.1", 7946), source_node="node-a"),
        "0085a44e6f6465a66e6f64652d62a55365714e6fce00011170aa536f7572636541646472a47f000001"
        "aa536f757263654e6f6465a66e6f64652d61aa536f75726365506f7274cd1f0a",
    ),
    # indirectPingReq: Nack bool c3, Target a 16-byte raw (IPv6)
    (
        IndirectPing(
            seq_no=300,
            target=("fd00::1", 7946),
            node="node-c",
            nack=True,
            source=("127.0.0.1", 8000),
            source_node="node-a",
        ),
        "0188a44e61636bc3a44e6f6465a66e6f64652d63a4506f7274cd1f0aa55365714e6fcd012c"
        "aa536f7572636541646472a47f000001aa536f757263654e6f6465a66e6f64652d61"
        "aa536f75726365506f7274cd1f40a6546172676574b0fd000000000000000000000000000001",
    ),
    # ackResp with a nil Payload: c0
    (Ack(seq_no=42), "0282a75061796c6f6164c0a55365714e6f2a"),
    (Ack(seq_no=42, payload=b"\x01\x02\x03"), "0282a75061796c6f6164a3010203a55365714e6f2a"),
    (Nack(seq_no=0xFFFFFFFF), "0b81a55365714e6fceffffffff"),
    (Err(error="boom"), "0d81a54572726f72a4626f6f6d"),
    (
        Suspect(incarnation=7, node="node-b", sender="node-a"),
        "0383a446726f6da66e6f64652d61ab496e6361726e6174696f6e07a44e6f6465a66e6f64652d62",
    ),
    (
        Dead(incarnation=256, node="node-b", sender="node-b"),
        "0583a446726f6da66e6f64652d62ab496e6361726e6174696f6ecd0100a44e6f6465a66e6f64652d62",
    ),
    # a 40-byte Meta is raw16 (da 0028), never str8/bin8; Vsn []uint8 is a 6-byte raw
    (
        Alive(
            incarnation=1,
            node="node-a",
            address=("127.0.0.1", 7946),
            meta=b"x" * 40,
            vsn=(1, 5, 2, 2, 5, 4),
        ),
        "0486a441646472a47f000001ab496e6361726e6174696f6e01a44d657461da0028"
        + "78" * 40
        + "a44e6f6465a66e6f64652d61a4506f7274cd1f0aa356736ea6010502020504",
    ),
    (
        Alive(incarnation=65536, node="node-a", address=("fd00::1", 1), vsn=(1, 5, 2, 0, 0, 0)),
        "0486a441646472b0fd000000000000000000000000000001ab496e6361726e6174696f6ece00010000"
        "a44d657461c0a44e6f6465a66e6f64652d61a4506f727401a356736ea6010502000000",
    ),
    # userMsg in a packet: type byte + raw payload, no msgpack (SendBestEffort)
    (User(payload=b"hi"), "086869"),
]


@pytest.mark.parametrize(("message", "golden"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_message_bytes(message, golden):
    assert encode_message(message).hex() == golden
    assert decode_packet(bytes.fromhex(golden), WireConfig()) == [message]


def test_golden_compound_and_compressed():
    ping, nack = encode_message(Ping(seq_no=1, node="n1")), encode_message(Nack(seq_no=2))
    # makeCompoundMessage: 07 | count 02 | lengths 0011 0009 (uint16 BE) | parts
    compound = "0702001100090082a44e6f6465a26e31a55365714e6f010b81a55365714e6f02"
    packets = encode_packet([Ping(seq_no=1, node="n1"), Nack(seq_no=2)], WireConfig(), crc=False)
    assert [p.hex() for p in packets] == [compound]
    assert bytes.fromhex(compound)[6:] == ping + nack
    # compressPayload(makeCompoundMessage([ping, nack, ping, nack])) from Go: 09 {Algo 0, Buf}
    go = bytes.fromhex(
        "0982a4416c676f00a3427566da0033000f1000100140028206010822e5e40d9932a2dcc42835a54c9c86"
        "011604a268b1a100850c1d4294c8f1e29b8c1b2b9a141010"
    )
    msgs = [Ping(seq_no=1, node="n1"), Nack(seq_no=2)] * 2
    assert decode_packet(go, WireConfig()) == msgs
    # 09 | fixmap 2 | "Algo" 0 | "Buf" raw16 (da 0033) | LZW bytes
    four = encode_packet(msgs, WireConfig(), crc=False)[0]
    assert go[:15].hex() == "0982a4416c676f00a3427566da0033" and lzw_compress(four) == go[15:]
    # memberlist sends the compressed form only when it is smaller (here it is not)
    assert encode_packet(msgs, WireConfig(compression=True), crc=False) == [four]


def test_golden_stream_bodies():
    node = PushNodeState(
        name="node-a",
        address=("127.0.0.1", 7946),
        meta=b"\xff\x80",
        incarnation=3,
        state=NodeState.ALIVE,
        vsn=(1, 5, 2, 2, 5, 4),
    )
    pp = PushPull(join=True, nodes=(node,), user_state=b"abc")
    # sendLocalState: 06 | pushPullHeader{Join, Nodes, UserStateLen} | pushNodeState | user state
    golden = (
        "0683a44a6f696ec3a54e6f64657301ac5573657253746174654c656e03"
        "87a441646472a47f000001ab496e6361726e6174696f6e03a44d657461a2ff80a44e616d65a66e6f64652d61"
        "a4506f7274cd1f0aa5537461746500a356736ea6010502020504616263"
    )
    assert encode_stream(pp, WireConfig()).hex() == golden
    # sendUserMsg: 08 | userMsgHeader{UserMsgLen: 5} | payload
    user = "0881aa557365724d73674c656e0568656c6c6f"
    assert encode_stream(User(payload=b"hello"), WireConfig()).hex() == user
    for raw, expected in ((golden, pp), (user, User(payload=b"hello"))):
        decoder = StreamDecoder(WireConfig())
        decoder.feed(bytes.fromhex(raw))
        assert decoder.message() == expected


def test_golden_go_encrypted_payloads():
    """encryptPayload output from Go (random nonces) for ping{1, "n1"}; we must open them."""
    k16, k32 = b"0123456789abcdef", bytes([7]) * 32
    ping = Ping(seq_no=1, node="n1")
    vectors = [
        (  # version 1, no AAD
            "01c1b1db50867147e69234b2d79c9159b944470fd81ea80e4cb7a19cd4ea06623d07ebeca47e4d65212c8cd972f5",
            "",
        ),
        (  # version 0: PKCS7-padded before sealing
            "00a04d5a251282373de52a90d7ea17bb2027baea6d1116c4232d494e698f4fa2207e01d9cd05fbfac8821d"
            "45921a00e4f515ae80affbfd8820815e6910",
            "",
        ),
        (  # version 1, 32-byte key
            "0100d1814a4b4035f167f0950a17df30d8f846a13213158ec3a2197dca0be2e7c9e969612687f2c98130"
            "9ec1404d",
            "",
        ),
        (  # version 1 with the label "prod" as associated data
            "01611c1d85b1f6fe82927886080e2e60dd3c14bf236e1af3aa3607b2364b72e8eb030b608e610a469eff"
            "0eec1d51",
            "prod",
        ),
    ]
    ring = Keyring([K1, k16, k32])
    for hexed, label in vectors:
        payload = bytes.fromhex(hexed)
        if label:  # as memberlist >= 0.3 sends it: label header outside the ciphertext
            payload = bytes((244, len(label))) + label.encode() + payload
        assert decode_packet(payload, WireConfig(label=label, keyring=ring)) == [ping]
    with pytest.raises(WireError) as err:
        decode_packet(bytes.fromhex(vectors[0][0]), WireConfig(keyring=Keyring([K1])))
    assert err.value.reason == "decrypt_failed"


def test_golden_serf_tags():
    assert encode_tags({"role": "x"}).hex() == "ff81a4726f6c65a178"
    assert decode_tags(bytes.fromhex("ff81a4726f6c65a178")) == {"role": "x"}
    tags = {"region": "eu-west", "role": "gateway", "http": "10.0.0.7:8080"}
    assert decode_tags(encode_tags(tags)) == tags
    assert decode_tags(b"legacy-role") == {"role": "legacy-role"}  # Serf < protocol 3
    with pytest.raises(WireError) as err:
        encode_tags({"k": "v" * 600})
    assert err.value.reason == "meta_too_large"


# -- LZW against Go's compress/lzw ------------------------------------------------------------


def _noise(n: int) -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n))


@pytest.mark.parametrize(
    ("data", "size", "digest"),
    [
        # sha256 of Go 1.19 lzw.NewWriter(w, lzw.LSB, 8) output: random bytes (many table
        # resets at 4095 codes) and a two-letter text (long entries, KwKwK codes)
        (_noise(625), 27301, "2de3cf5f6a1b79ab57a1cdff295b565dda372db7348f797de3eabf946186acc6"),
        (
            bytes(b"ab"[x & 1] for x in _noise(1563))[:50000],
            7764,
            "733c35a4eb8c81fab87fee1751d9ca90e86fd58eb79c4a3e68b2b5813c4c082f",
        ),
    ],
    ids=["noise", "two-letters"],
)
def test_lzw_matches_go(data, size, digest):
    packed = lzw_compress(data)
    assert (len(packed), hashlib.sha256(packed).hexdigest()) == (size, digest)
    assert lzw_decompress(packed, len(data)) == data


def test_lzw_go_vector_and_legacy_stream():
    go = bytes.fromhex("00a93c1152e48914274fa80824687061c183091d1a44a870e04389102b32cc881123c580")
    text = b"TOBEORNOTTOBEORTOBEORNOT" * 3
    assert lzw_compress(text) == go
    assert lzw_decompress(go, 1000) == text
    # Go before 1.17 did not start with a clear code: drop the first 9-bit code
    legacy = (int.from_bytes(go, "little") >> 9).to_bytes(len(go), "little")
    assert lzw_decompress(legacy, 1000) == text
    assert lzw_decompress(lzw_compress(b""), 0) == b""
    with pytest.raises(LZWError):
        lzw_decompress(go, 10)  # expands past the limit
    with pytest.raises(LZWError):
        lzw_decompress(go[:5], 1000)  # no end code


@FAST
@given(st.binary(max_size=3000))
def test_lzw_round_trip(data):
    assert lzw_decompress(lzw_compress(data), len(data)) == data


# -- round trips over random field values -----------------------------------------------------

names = st.text(max_size=40)
u32 = st.integers(0, 0xFFFFFFFF)
ports = st.integers(1, 0xFFFF)
ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1)).filter(
    lambda s: ipaddress.IPv6Address(s).ipv4_mapped is None
)
addresses = st.tuples(st.one_of(ipv4, ipv6), ports)
vsns = st.tuples(*[st.integers(0, 255)] * 6)
metas = st.binary(max_size=512)

packet_messages = st.one_of(
    st.builds(Ping, seq_no=u32, node=names, source=st.none() | addresses, source_node=names),
    st.builds(
        IndirectPing,
        seq_no=u32,
        target=addresses,
        node=names,
        nack=st.booleans(),
        source=st.none() | addresses,
        source_node=names,
    ),
    st.builds(Ack, seq_no=u32, payload=st.binary(max_size=64)),
    st.builds(Nack, seq_no=u32),
    st.builds(Err, error=names),
    st.builds(Suspect, incarnation=u32, node=names, sender=names),
    st.builds(Dead, incarnation=u32, node=names, sender=names),
    st.builds(Alive, incarnation=u32, node=names, address=addresses, meta=metas, vsn=vsns),
    st.builds(User, payload=st.binary(max_size=300)),
)
node_states = st.builds(
    PushNodeState,
    name=names,
    address=addresses,
    meta=metas,
    incarnation=u32,
    state=st.sampled_from(NodeState),
    vsn=vsns,
)
stream_messages = st.one_of(
    st.builds(
        PushPull,
        join=st.booleans(),
        nodes=st.lists(node_states, max_size=6).map(tuple),
        user_state=st.binary(max_size=500),
    ),
    st.builds(User, payload=st.binary(max_size=500)),
    st.builds(Ping, seq_no=u32, node=names, source=st.none() | addresses, source_node=names),
    st.builds(Ack, seq_no=u32, payload=st.binary(max_size=64)),
)
configs = st.builds(
    WireConfig,
    label=st.sampled_from(["", "prod", "x" * 255]),
    keyring=st.sampled_from([None, Keyring([K1]), Keyring([K3, K2])]),
    compression=st.booleans(),
    protocol_version=st.sampled_from([1, 2, 5]),
)


@FAST
@given(packet_messages)
def test_every_packet_message_round_trips(message):
    assert decode_packet(encode_message(message), WireConfig()) == [message]


@FAST
@given(st.lists(packet_messages, max_size=25), configs, st.booleans())
def test_packets_round_trip_through_every_layer(messages, config, crc):
    packets = encode_packet(messages, config, crc=crc)
    decoded = [m for p in packets for m in decode_packet(p, config)]
    assert decoded == messages
    for packet in packets:  # only a message too big on its own may exceed the limit
        assert len(packet) <= 1400 or len(decode_packet(packet, config)) == 1


@FAST
@given(stream_messages, configs, st.integers(1, 700))
def test_streams_round_trip_in_any_chunking(message, config, chunk):
    sent = encode_stream(message, config)
    decoder = StreamDecoder(config)
    results = []
    for i in range(0, len(sent), chunk):
        decoder.feed(sent[i : i + chunk])
        got = decoder.message()
        if got is not None:
            results.append(got)
    assert results == [message]
    assert decoder.buffered == 0
    # the reply on the same connection carries no label header
    reply = StreamDecoder(config, dialer=True)
    reply.feed(encode_stream(message, config, dialer=False))
    assert reply.message() == message


@FAST
@given(st.binary(max_size=200), configs)
def test_garbage_packets_only_raise_wire_error(data, config):
    try:
        decode_packet(data, config)
    except WireError:
        pass


@FAST
@given(st.binary(max_size=200), configs)
def test_garbage_streams_only_raise_wire_error(data, config):
    decoder = StreamDecoder(config)
    try:
        decoder.feed(data)
        decoder.message()
    except WireError:
        pass


# -- compound packing --------------------------------------------------------------------------


def _users(*payload_sizes: int) -> list[User]:
    return [User(payload=bytes(n)) for n in payload_sizes]


def test_compound_fills_exactly_1400_bytes():
    # CRC (5) + compound header (2) + 7 x (2-byte length + 1 type byte + 196) = 1400
    packets = encode_packet(_users(*[196] * 7), WireConfig())
    assert [len(p) for p in packets] == [1400]
    assert packets[0][0] == MessageType.HAS_CRC and packets[0][5] == MessageType.COMPOUND
    # one byte more no longer fits: the third message starts a second packet
    sizes = [196] * 6 + [197]
    packets = encode_packet(_users(*sizes), WireConfig())
    assert [len(p) for p in packets] == [1201, 203]  # 5 + 2 + 6 x 199; 5 + 198 alone
    decoded = [m.payload for p in packets for m in decode_packet(p, WireConfig())]
    assert decoded == [bytes(n) for n in sizes]


def test_packing_counts_label_and_encryption_overhead():
    config = WireConfig(label="cluster-a", keyring=Keyring([K1]))
    packets = encode_packet(_users(*[100] * 40), config)
    assert len(packets) > 1 and all(len(p) <= 1400 for p in packets)
    assert max(len(p) for p in packets) > 1300  # and they are well filled


def test_large_message_goes_alone_and_255_part_limit():
    packets = encode_packet(_users(10, 3000, 10), WireConfig())
    assert len(packets) == 3 and len(packets[1]) > 1400
    packets = encode_packet(_users(*[0] * 300), WireConfig(), max_size=10_000)
    assert [p[6] for p in packets] == [255, 45]  # the compound count byte after the CRC
    assert encode_packet([], WireConfig()) == []
    assert encode_packet([encode_user(b"x")], WireConfig(), crc=False) == [b"\x08x"]


def test_compression_only_when_smaller():
    small = encode_packet([Nack(seq_no=1)], WireConfig(compression=True), crc=False)
    assert small == [encode_message(Nack(seq_no=1))]
    big = encode_packet(_users(*[300] * 4), WireConfig(compression=True), crc=False)
    assert big[0][0] == MessageType.COMPRESS and len(big[0]) < 400


# -- CRC, labels -------------------------------------------------------------------------------


def test_crc_layer_and_corruption():
    packet = encode_packet([Ping(seq_no=9, node="a")], WireConfig(), crc=True)[0]
    body = encode_message(Ping(seq_no=9, node="a"))
    assert packet == b"\x0c" + struct.pack(">I", zlib.crc32(body)) + body
    corrupt = bytearray(packet)
    corrupt[-1] ^= 0x01
    with pytest.raises(WireError) as err:
        decode_packet(bytes(corrupt), WireConfig())
    assert err.value.reason == "bad_crc"
    # memberlist < protocol 5 peers get no CRC
    assert encode_packet([Ping(seq_no=9, node="a")], WireConfig(protocol_version=4)) == [body]


def test_label_rules():
    ping = Ping(seq_no=1, node="a")
    labelled = encode_packet([ping], WireConfig(label="blue"))[0]
    assert labelled[:6] == b"\xf4\x04blue"
    plain = encode_packet([ping], WireConfig())[0]
    for data, config in (
        (labelled, WireConfig(label="green")),  # another label
        (labelled, WireConfig()),  # a label when we have none
        (plain, WireConfig(label="blue")),  # none when we have one
        (labelled, WireConfig(label="blue", skip_inbound_label_check=True)),  # double header
    ):
        with pytest.raises(WireError) as err:
            decode_packet(data, config)
        assert err.value.reason == "label_mismatch"
    assert decode_packet(labelled, WireConfig(label="blue")) == [ping]
    assert decode_packet(plain, WireConfig(label="blue", skip_inbound_label_check=True)) == [ping]
    with pytest.raises(WireError, match="empty"):
        decode_packet(b"\xf4\x00" + plain, WireConfig())
    with pytest.raises(WireError):
        decode_packet(b"\xf4\x09blu", WireConfig())
    with pytest.raises(WireError):
        WireConfig(label="x" * 256)


def test_label_is_bound_as_associated_data():
    ping = Ping(seq_no=1, node="a")
    sent = encode_packet([ping], WireConfig(label="blue", keyring=Keyring([K1])))[0]
    stripped = sent[6:]  # someone removes the header and relabels the packet
    relabelled = b"\xf4\x05green" + stripped
    with pytest.raises(WireError) as err:
        decode_packet(relabelled, WireConfig(label="green", keyring=Keyring([K1])))
    assert err.value.reason == "decrypt_failed"
    # an unlabelled receiver that skips the check uses its own label as AAD
    ok = WireConfig(label="blue", keyring=Keyring([K1]), skip_inbound_label_check=True)
    assert decode_packet(stripped, ok) == [ping]


# -- keyring and encryption ------------------------------------------------------------------


def test_key_rotation_add_use_remove():
    sender, receiver = Keyring([K1]), Keyring([K1])
    send, recv = WireConfig(keyring=sender), WireConfig(keyring=receiver)
    ping = Ping(seq_no=5, node="b")
    old = encode_packet([ping], send)[0]  # sealed with K1
    receiver.add(K2)
    sender.add(K2)
    sender.use(K2)
    assert sender.keys == [K2, K1] and sender.primary == K2
    new = encode_packet([ping], send)[0]  # sealed with K2
    assert decode_packet(new, recv) == [ping]  # K2 installed, not yet primary
    receiver.use(K2)
    assert decode_packet(old, recv) == [ping]  # K1 still in the ring
    receiver.remove(K1)
    with pytest.raises(WireError) as err:
        decode_packet(old, recv)
    assert err.value.reason == "decrypt_failed"
    assert decode_packet(new, recv) == [ping]
    with pytest.raises(ValueError, match="primary"):
        receiver.remove(K2)
    with pytest.raises(ValueError):
        receiver.use(K3)
    with pytest.raises(ValueError):
        Keyring([b"short"])


def test_wrong_key_and_verify_flags():
    ping = Ping(seq_no=5, node="b")
    sealed = encode_packet([ping], WireConfig(keyring=Keyring([K1])))[0]
    plain = encode_packet([ping], WireConfig())[0]
    with pytest.raises(WireError) as err:
        decode_packet(sealed, WireConfig(keyring=Keyring([K2])))
    assert err.value.reason == "decrypt_failed"
    assert K1.hex() not in str(err.value) and repr(K1) not in str(err.value)
    assert "Keyring(<1 keys>)" == repr(Keyring([K1]))
    with pytest.raises(WireError):  # plaintext refused while verifying incoming
        decode_packet(plain, WireConfig(keyring=Keyring([K1])))
    lenient = WireConfig(keyring=Keyring([K1]), gossip_verify_incoming=False)
    assert decode_packet(plain, lenient) == [ping]
    assert decode_packet(sealed, lenient) == [ping]
    not_sealing = WireConfig(keyring=Keyring([K1]), gossip_verify_outgoing=False)
    assert encode_packet([ping], not_sealing) == [plain]
    assert Keyring.from_base64(["AAECAwQFBgcICQoLDA0ODw=="]).primary == K1


def test_encryption_versions():
    ping = Ping(seq_no=5, node="b")
    ring = Keyring([K1])
    v0 = encode_packet([ping], WireConfig(keyring=ring, protocol_version=1))[0]
    v1 = encode_packet([ping], WireConfig(keyring=ring, protocol_version=2))[0]
    body = len(encode_message(ping))  # protocol 1 and 2: no CRC
    assert v0[0] == 0 and len(v0) == 1 + 12 + (body + 16 - body % 16) + 16
    assert v1[0] == 1 and len(v1) == 1 + 12 + body + 16
    for packet in (v0, v1):
        assert decode_packet(packet, WireConfig(keyring=ring)) == [ping]
    with pytest.raises(WireError, match="version"):
        decode_packet(b"\x02" + v1[1:], WireConfig(keyring=ring))


# -- skipping what we do not handle ----------------------------------------------------------


def test_unknown_and_malformed_parts_are_skipped():
    good = encode_message(Nack(seq_no=3))
    parts = [good, b"\x06\x80", b"\x32junk", b"\x02\xc1", good]  # push-pull over UDP, 50, bad
    skipped: list[Skipped] = []
    packet = bytes((7, len(parts))) + b"".join(struct.pack(">H", len(p)) for p in parts)
    packet += b"".join(parts)
    assert decode_packet(packet, WireConfig(), skipped) == [Nack(seq_no=3)] * 2
    assert skipped == [
        Skipped(6, "unknown_type"),
        Skipped(50, "unknown_type"),
        Skipped(2, "malformed"),
    ]
    # a truncated compound keeps the parts before the cut
    skipped.clear()
    assert decode_packet(packet[:-3], WireConfig(), skipped) == [Nack(seq_no=3)]
    assert skipped[-1] == Skipped(MessageType.COMPOUND, "truncated")
    # nested compound is refused, a lone malformed message drops the packet
    nested = bytes((7, 1)) + struct.pack(">H", len(packet)) + packet
    skipped.clear()
    assert decode_packet(nested, WireConfig(), skipped) == []
    assert skipped == [Skipped(7, "nested")]
    for bad in (b"", b"\x00\xc1", b"\x07", b"\x07\x05\x00", b"\x09\x81\xa4Algo\x01"):
        with pytest.raises(WireError):
            decode_packet(bad, WireConfig())


def test_address_and_meta_checks():
    mapped = Alive(incarnation=1, node="a", address=("::ffff:10.1.2.3", 7946))
    assert decode_packet(encode_message(mapped), WireConfig())[0].address == ("10.1.2.3", 7946)
    assert encode_message(mapped) == encode_message(
        Alive(incarnation=1, node="a", address=("10.1.2.3", 7946))
    )
    for bad in (
        Alive(incarnation=1, node="a", address=("not-an-ip", 1)),
        Alive(incarnation=1, node="a", address=("10.0.0.1", 1), meta=bytes(513)),
        Ping(seq_no=2**32, node="a"),
    ):
        with pytest.raises(WireError):
            encode_message(bad)


# -- streams -----------------------------------------------------------------------------------


def test_stream_framing_layout():
    ring = Keyring([K1])
    config = WireConfig(label="blue", keyring=ring)
    sent = encode_stream(Ack(seq_no=1), config)
    assert sent[:6] == b"\xf4\x04blue" and sent[6] == MessageType.ENCRYPT
    (length,) = struct.unpack(">I", sent[7:11])
    assert length == len(sent) - 11
    # AAD = [10][length] + label: the frame decrypts only with both
    body = ring.open(sent[11:], sent[6:11] + b"blue")
    assert body == encode_message(Ack(seq_no=1))
    assert encode_stream(Ack(seq_no=1), config, dialer=False)[0] == MessageType.ENCRYPT


def test_stream_errors():
    ring = Keyring([K1])
    cases = [
        (
            encode_stream(Ping(seq_no=1, node="a"), WireConfig()),
            WireConfig(keyring=ring),
            "not_encrypted",
        ),
        (
            encode_stream(Ping(seq_no=1, node="a"), WireConfig(keyring=ring)),
            WireConfig(),
            "not_configured",
        ),
        (
            encode_stream(Ping(seq_no=1, node="a"), WireConfig(label="a")),
            WireConfig(),
            "label_mismatch",
        ),
        (
            encode_stream(Ping(seq_no=1, node="a"), WireConfig(keyring=ring)),
            WireConfig(keyring=Keyring([K2])),
            "decrypt_failed",
        ),
        (b"\x0a\x7f\xff\xff\xff", WireConfig(keyring=ring), "too_large"),
        (
            b"\x06\x83\xa4Join\xc2\xa5Nodes\x00\xacUserStateLen\xce\x7f\xff\xff\xff",
            WireConfig(),
            "too_large",
        ),
        (b"\x03\x80", WireConfig(), "unexpected_type"),
        (b"\x00\x81\xa5SeqNo\xa1x", WireConfig(), "malformed"),
    ]
    for data, config, reason in cases:
        decoder = StreamDecoder(config)
        decoder.feed(data)
        with pytest.raises(WireError) as err:
            decoder.message()
        assert err.value.reason == reason, data


def test_stream_waits_for_more_and_reads_back_to_back_messages():
    config = WireConfig(compression=True)
    first = encode_stream(Ping(seq_no=1, node="a"), config)
    second = encode_stream(Ack(seq_no=1), config, dialer=False)
    decoder = StreamDecoder(config)
    decoder.feed(first[:-1])
    assert decoder.message() is None
    assert decoder.message() is None  # nothing new arrived: no re-parse
    decoder.feed(first[-1:] + second)
    assert decoder.message() == Ping(seq_no=1, node="a")
    assert decoder.message() == Ack(seq_no=1)
    assert decoder.message() is None


@FAST
@given(
    st.lists(packet_messages, min_size=1, max_size=8),
    st.booleans(),
    st.data(),
)
def test_corrupted_packets_only_raise_wire_error(messages, compression, data):
    config = WireConfig(compression=compression)
    packet = bytearray(encode_packet(messages, config, max_size=60_000, crc=False)[0])
    for _ in range(data.draw(st.integers(1, 4))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_packet(bytes(packet), config)
    except WireError:
        pass


def test_decompression_is_bounded_and_not_nested():
    from rainbridge.cluster import gocodec

    def compress_msg(body: bytes) -> bytes:
        out = bytearray(b"\x09\x82")
        gocodec.pack_str(out, "Algo")
        gocodec.pack_uint(out, 0)
        gocodec.pack_str(out, "Buf")
        gocodec.pack_raw(out, lzw_compress(body))
        return bytes(out)

    bomb = compress_msg(b"\x08" + bytes(2 << 20))  # a 2 MiB user message in a few KiB
    assert len(bomb) < 10_000
    with pytest.raises(WireError) as err:
        decode_packet(bomb, WireConfig())
    assert err.value.reason == "bad_compression"
    skipped: list[Skipped] = []
    nested = compress_msg(compress_msg(encode_message(Nack(seq_no=1))))
    assert decode_packet(nested, WireConfig(), skipped) == []
    assert skipped == [Skipped(MessageType.COMPRESS, "nested")]
    assert decode_packet(compress_msg(encode_message(Nack(seq_no=1))), WireConfig()) == [
        Nack(seq_no=1)
    ]
