"""A minimal, independent sinew peer (dialler side), written from docs/protocol.md only.

Layers, bottom up (section numbers are those of docs/protocol.md):

* TCP, the 8-byte preamble (1) and the refusal record (1.1);
* Noise XX with either suite (2), the preamble as prologue, the identity payload bound to the
  X25519 static key with an Ed25519 signature in domain ``noise-handshake/v1`` (2, 6);
* Noise transport messages (u16 big-endian length) carrying one byte stream;
* yamux version 0 (our own framer: 12-byte header, data / window update / ping / go away,
  SYN / ACK / FIN / RST, 256 KiB stream windows);
* sinew frames (4, little-endian), the control stream (3, version 3), message streams (3.1),
  identify, ping, disconnect (5).

Synchronous sockets: one reader thread per connection parses yamux and fills stream buffers;
everything else runs in the caller's thread and waits on a condition variable with timeouts.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

MAGIC = b"SINEW"
VERSION = 1
SUITES = {
    1: "Noise_XX_25519_ChaChaPoly_BLAKE2s",
    2: "Noise_XX_25519_AESGCM_SHA256",
}
REFUSE_MAGIC = b"REFUSE"
REFUSAL_LIMITS = {
    1: "total connections",
    2: "inbound connections",
    3: "inbound handshakes in progress",
    4: "connections from this IP address",
    5: "shutting down",
}

NOISE_MAX_MSG = 65535
NOISE_TAG = 16
NOISE_MAX_PLAINTEXT = NOISE_MAX_MSG - NOISE_TAG  # 65,519

SIG_PREFIX = b"sinew-sig:"
DOMAIN_HANDSHAKE = b"noise-handshake/v1"
DOMAIN_PEER_RECORD = b"peer-record/v1"

# yamux
YAMUX_VERSION = 0
Y_DATA, Y_WINDOW_UPDATE, Y_PING, Y_GO_AWAY = 0, 1, 2, 3
F_SYN, F_ACK, F_FIN, F_RST = 1, 2, 4, 8
YAMUX_WINDOW = 256 * 1024
YAMUX_HEADER = struct.Struct(">BBHII")

# sinew frame flags (section 4)
FL_REQUEST = 0x01
FL_RESPONSE = 0x02
FL_ERROR = 0x04
FL_CHECKSUM = 0x08
FL_LARGE = 0x10
FL_ACK = 0x20
FL_RESERVED = 0xC0
FL_KINDS = FL_REQUEST | FL_RESPONSE | FL_ERROR | FL_ACK

# opcodes (section 4)
OP_BYTES = 1
OP_KEEPALIVE = 2
OP_KEEPALIVE_RESPONSE = 3
OP_PING = 10
OP_PONG = 11
OP_DISCONNECT = 14
OP_ACK = 18
OP_IDENTIFY = 19
OP_CONTROL_STREAM = 20
OP_OPEN_STREAM = 21
OP_PERF = 22
OP_MESSAGE_STREAM = 23
OP_APP_MIN = 1000

CONTROL_STREAM_VERSION = 3
LARGE_TAKEN = 0x01

# payload caps (section 4)
CAP_MESSAGE_STREAM = 1024 * 1024
CAP_CONTROL_STREAM = 64 * 1024
CAP_FIRST_FRAME_AFTER_LENGTH = 64

# status codes
ST_UNKNOWN_OPCODE = 1
ST_BUSY = 2
ST_UNAUTHORIZED = 3
ST_TOO_LARGE = 4
ST_BAD_REQUEST = 5
ST_INTERNAL = 6
ST_SHUTTING_DOWN = 7

# disconnect codes (section 5)
DC_SHUTDOWN = 0
DC_DUPLICATE = 1
DC_IDLE = 2
DC_PING_TIMEOUT = 3
DC_PROTOCOL_ERROR = 4
DC_UNAUTHORIZED = 5
DC_CONNECTION_LIMIT = 6
DC_REPLACED = 7
DC_REMOVED = 8
DC_FLOODING = 9
DC_STALLED = 10
DC_UNSUPPORTED_VERSION = 11


class ProtocolError(Exception):
    """The remote broke the protocol (as this implementation reads the document)."""


class Refused(Exception):
    """The listener answered with the refusal record of section 1.1."""

    def __init__(self, limit: int, retry_after: int):
        super().__init__(
            f"refused: limit {limit} ({REFUSAL_LIMITS.get(limit, 'unknown')}), retry after {retry_after}s"
        )
        self.limit = limit
        self.retry_after = retry_after


class Closed(Exception):
    """The connection (or stream) ended while we were waiting on it."""


# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), used by the frame checksum and the peer id text form
# --------------------------------------------------------------------------------------------


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Ed25519 strictness: small-order ("weak") point detection, in pure Python
# --------------------------------------------------------------------------------------------

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _ed_decompress(b: bytes):
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little") & ((1 << 255) - 1)
    sign = b[31] >> 7
    if y >= _P:
        return None  # non-canonical encoding
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y)


def _ed_add(p1, p2):
    x1, y1 = p1
    x2, y2 = p2
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return (x3, y3)


def ed25519_is_weak(encoded: bytes) -> bool:
    """True for an undecodable point or one of small order ([8]P is the identity)."""
    pt = _ed_decompress(encoded)
    if pt is None:
        return True
    for _ in range(3):
        pt = _ed_add(pt, pt)
    return pt == (0, 1)


def sig_message(domain: bytes, message: bytes) -> bytes:
    """Section 6: "sinew-sig:" || domain || 0x00 || message."""
    return SIG_PREFIX + domain + b"\x00" + message


def verify_strict(public: bytes, signature: bytes, message: bytes) -> bool:
    if len(public) != 32 or len(signature) != 64:
        return False
    if ed25519_is_weak(public) or ed25519_is_weak(signature[:32]):
        return False
    # S must be canonical (< L); OpenSSL checks that too, do it explicitly anyway.
    L = 2**252 + 27742317777372353535851937790883648493
    if int.from_bytes(signature[32:], "little") >= L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Section 6: peer ids in text form
# --------------------------------------------------------------------------------------------


def peer_id_to_text(key: bytes) -> str:
    raw = key + struct.pack("<I", crc32c(key))
    return "sn1" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def peer_id_from_text(text: str) -> bytes:
    if not text[:3].lower() == "sn1" or len(text) != 61:
        raise ValueError("not a version-1 peer id")
    body = text[3:].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    key, crc = raw[:32], struct.unpack("<I", raw[32:36])[0]
    if crc32c(key) != crc:
        raise ValueError("peer id checksum mismatch")
    if ed25519_is_weak(key):
        raise ValueError("weak peer id key")
    return key


# --------------------------------------------------------------------------------------------
# Section 2: the identity payload of handshake messages 2 and 3
# --------------------------------------------------------------------------------------------


@dataclass
class Identity:
    key: Ed25519PrivateKey
    boot_nonce: int

    @classmethod
    def generate(cls) -> "Identity":
        return cls(Ed25519PrivateKey.generate(), struct.unpack("<Q", os.urandom(8))[0])

    @property
    def public(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def payload(self, x25519_static_public: bytes, extensions: bytes = b"") -> bytes:
        sig = self.key.sign(sig_message(DOMAIN_HANDSHAKE, x25519_static_public))
        return (
            bytes([1])
            + self.public
            + sig
            + struct.pack("<QH", self.boot_nonce, len(extensions))
            + extensions
        )


@dataclass
class RemoteIdentity:
    peer_id: bytes
    boot_nonce: int
    extensions: bytes


def parse_identity_payload(payload: bytes, x25519_static_public: bytes) -> RemoteIdentity:
    if len(payload) < 107:
        raise ProtocolError(f"identity payload too short ({len(payload)} bytes)")
    if payload[0] != 1:
        raise ProtocolError(f"identity payload version {payload[0]}")
    key = payload[1:33]
    sig = payload[33:97]
    boot_nonce, ext_len = struct.unpack("<QH", payload[97:107])
    if len(payload) != 107 + ext_len:
        raise ProtocolError(
            f"identity payload: {len(payload) - 107} bytes after the header, extension length {ext_len}"
        )
    if ed25519_is_weak(key):
        raise ProtocolError("weak identity key")
    if not verify_strict(key, sig, sig_message(DOMAIN_HANDSHAKE, x25519_static_public)):
        raise ProtocolError("identity signature does not verify against the Noise static key")
    return RemoteIdentity(key, boot_nonce, payload[107:])


# --------------------------------------------------------------------------------------------
# Section 4: frames
# --------------------------------------------------------------------------------------------


@dataclass
class Frame:
    opcode: int
    flags: int = 0
    payload: bytes = b""
    request_id: Optional[int] = None
    status: Optional[int] = None

    @property
    def is_request(self):
        return bool(self.flags & FL_REQUEST)

    @property
    def is_response(self):
        return bool(self.flags & FL_RESPONSE)

    @property
    def is_error(self):
        return bool(self.flags & FL_ERROR)

    def __repr__(self):
        p = self.payload if len(self.payload) <= 32 else self.payload[:32] + b"..."
        return (
            f"Frame(op={self.opcode}, flags=0x{self.flags:02x}, id={self.request_id}, "
            f"status={self.status}, payload[{len(self.payload)}]={p!r})"
        )


def _has_id(flags: int) -> bool:
    return bool(flags & FL_KINDS)


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    flags: int = 0,
    request_id: Optional[int] = None,
    status: Optional[int] = None,
    checksum: bool = False,
) -> bytes:
    if checksum:
        flags |= FL_CHECKSUM
    body = struct.pack("<IB", opcode, flags)
    if _has_id(flags):
        body += struct.pack("<Q", request_id or 0)
    if flags & FL_ERROR:
        body += struct.pack("<H", status or 0)
    body += payload
    if flags & FL_CHECKSUM:
        body += struct.pack("<I", crc32c(body))
    return struct.pack("<I", len(body)) + body


def frame_header_len(flags: int) -> int:
    """Bytes after the length field before the payload: opcode, flags, id, status."""
    n = 5
    if _has_id(flags):
        n += 8
    if flags & FL_ERROR:
        n += 2
    return n


class FrameDecoder:
    """Incremental decoder for a stream of sinew frames, with a payload cap."""

    def __init__(self, cap: int, max_length: Optional[int] = None):
        self.cap = cap  # on the payload, exactly (section 4)
        self.max_length = max_length  # on the length field (a stream's first frame: 64)
        self.buf = bytearray()

    def feed(self, data: bytes):
        self.buf += data

    def pending(self) -> int:
        return len(self.buf)

    def next(self) -> Optional[Frame]:
        if len(self.buf) < 4:
            return None
        (length,) = struct.unpack_from("<I", self.buf, 0)
        if length < 5:
            raise ProtocolError(f"frame length {length} shorter than opcode+flags")
        if self.max_length is not None and length > self.max_length:
            raise ProtocolError(f"frame length {length} over {self.max_length}")
        if len(self.buf) >= 9:
            flags = self.buf[8]
            self._check_flags(flags)
            hdr = frame_header_len(flags)
            trailer = 4 if flags & FL_CHECKSUM else 0
            if length < hdr + trailer:
                raise ProtocolError(f"frame length {length} too short for its header")
            if length - hdr - trailer > self.cap:
                raise ProtocolError(f"frame payload {length - hdr - trailer} over the cap {self.cap}")
        if len(self.buf) < 4 + length:
            return None
        body = bytes(self.buf[4 : 4 + length])
        del self.buf[: 4 + length]
        opcode, flags = struct.unpack_from("<IB", body, 0)
        if opcode == 0:
            raise ProtocolError("opcode 0")
        pos = 5
        rid = status = None
        if _has_id(flags):
            (rid,) = struct.unpack_from("<Q", body, pos)
            pos += 8
        if flags & FL_ERROR:
            (status,) = struct.unpack_from("<H", body, pos)
            pos += 2
        end = len(body)
        if flags & FL_CHECKSUM:
            end -= 4
            (crc,) = struct.unpack_from("<I", body, end)
            if crc32c(body[:end]) != crc:
                raise ProtocolError("bad frame checksum")
        return Frame(opcode, flags, body[pos:end], rid, status)

    @staticmethod
    def _check_flags(flags: int):
        if flags & FL_RESERVED:
            raise ProtocolError(f"reserved flag bits set: 0x{flags:02x}")
        kinds = flags & FL_KINDS
        if kinds & (kinds - 1):
            raise ProtocolError(f"conflicting frame kinds: 0x{flags:02x}")


# --------------------------------------------------------------------------------------------
# Section 5: strings, lists, identify, disconnect
# --------------------------------------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(f"truncated: need {n} bytes at {self.pos} of {len(self.data)}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self, limit: Optional[int] = None) -> str:
        n = self.u16()
        if limit is not None and n > limit:
            raise ProtocolError(f"string of {n} bytes over its limit {limit}")
        return self.take(n).decode("utf-8")

    def rest(self) -> bytes:
        return self.data[self.pos :]


def enc_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<H", len(b)) + b


@dataclass
class PeerRecord:
    peer_id: bytes
    seq: int
    addresses: list
    signature: bytes
    valid: bool


def parse_peer_record(raw: bytes) -> PeerRecord:
    r = Reader(raw)
    pid = r.take(32)
    seq = r.u64()
    count = r.u8()
    if count > 32:
        raise ProtocolError(f"peer record with {count} addresses")
    addrs = []
    for _ in range(count):
        n = r.u8()
        addrs.append(r.take(n).decode("utf-8"))
    signed = raw[: r.pos]
    sig = r.take(64)
    if r.rest():
        raise ProtocolError("bytes after the peer record signature")
    valid = verify_strict(pid, sig, sig_message(DOMAIN_PEER_RECORD, signed))
    return PeerRecord(pid, seq, addrs, sig, valid)


@dataclass
class Identify:
    protocol_version: int = 1
    agent: str = "sinew-interop-py/0.1"
    boot_nonce: int = 0
    listen_addresses: list = field(default_factory=list)
    observed_address: Optional[str] = None
    role: str = "node"
    opcode_ranges: list = field(default_factory=list)
    peer_record: bytes = b""
    trailing: bytes = b""

    def encode(self) -> bytes:
        out = struct.pack("<H", self.protocol_version)
        out += enc_string(self.agent)
        out += struct.pack("<Q", self.boot_nonce)
        out += struct.pack("<H", len(self.listen_addresses))
        for a in self.listen_addresses:
            out += enc_string(a)
        if self.observed_address is None:
            out += b"\x00"
        else:
            out += b"\x01" + enc_string(self.observed_address)
        out += enc_string(self.role)
        out += struct.pack("<H", len(self.opcode_ranges))
        for s, e in self.opcode_ranges:
            out += struct.pack("<II", s, e)
        out += struct.pack("<I", len(self.peer_record)) + self.peer_record
        return out

    @classmethod
    def decode(cls, data: bytes) -> "Identify":
        r = Reader(data)
        v = r.u16()
        agent = r.string(128)
        nonce = r.u64()
        n = r.u16()
        if n > 32:
            raise ProtocolError(f"identify with {n} listen addresses")
        listen = [r.string() for _ in range(n)]
        flag = r.u8()
        if flag not in (0, 1):
            raise ProtocolError(f"observed address flag {flag}")
        observed = r.string() if flag else None
        role = r.string(64)
        n = r.u16()
        if n > 256:
            raise ProtocolError(f"identify with {n} opcode ranges")
        ranges = []
        for _ in range(n):
            s, e = r.u32(), r.u32()
            if s > e:
                raise ProtocolError(f"opcode range {s}..={e}")
            ranges.append((s, e))
        rec_len = r.u32()
        if rec_len > 16 * 1024:
            raise ProtocolError(f"peer record of {rec_len} bytes")
        rec = r.take(rec_len)
        return cls(v, agent, nonce, listen, observed, role, ranges, rec, r.rest())


def encode_disconnect(code: int, message: str) -> bytes:
    return struct.pack("<H", code) + enc_string(message)


def decode_disconnect(payload: bytes):
    r = Reader(payload)
    return r.u16(), r.string(256)


# --------------------------------------------------------------------------------------------
# yamux v0
# --------------------------------------------------------------------------------------------


class YamuxStream:
    def __init__(self, session: "Session", sid: int, send_window: int = YAMUX_WINDOW):
        self.session = session
        self.id = sid
        self.send_window = send_window
        self.recv_window = YAMUX_WINDOW  # what the remote may still send us
        self.recv_buf = bytearray()
        self.consumed = 0  # consumed bytes not yet returned as window
        self.remote_fin = False  # the remote finished its half
        self.local_fin = False
        self.reset = False
        self.acked = False
        self.syn_sent = False
        self.total_received = 0

    # -- reading ------------------------------------------------------------------------------

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        """Bytes from the stream; b'' at the remote's FIN. Raises Closed on reset/timeout."""
        s = self.session
        deadline = time.monotonic() + timeout
        with s.cond:
            while not self.recv_buf:
                if self.remote_fin:
                    return b""
                if self.reset:
                    raise Closed(f"stream {self.id} reset")
                if s.closed:
                    raise Closed(f"connection closed ({s.close_reason}) while reading stream {self.id}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out reading stream {self.id}")
                s.cond.wait(left)
            data = bytes(self.recv_buf[:max_bytes])
            del self.recv_buf[: len(data)]
            self.consumed += len(data)
            # Return window as we consume (at half the initial window, as yamux does).
            delta = 0
            if self.consumed >= YAMUX_WINDOW // 2 and not self.remote_fin:
                delta = self.consumed
                self.consumed = 0
                self.recv_window += delta
        if delta:
            s.send_frame(Y_WINDOW_UPDATE, 0, self.id, delta)
        return data

    # -- writing ------------------------------------------------------------------------------

    def _flags_for_send(self) -> int:
        if not self.syn_sent:
            self.syn_sent = True
            return F_SYN if self.id % 2 == self.session.my_parity else F_ACK
        return 0

    def write(self, data: bytes, timeout: float = 10.0):
        s = self.session
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            with s.cond:
                while self.send_window == 0:
                    if self.reset:
                        raise Closed(f"stream {self.id} reset")
                    if s.closed:
                        raise Closed(f"connection closed ({s.close_reason})")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no send window on stream {self.id}")
                    s.cond.wait(left)
                if self.reset:
                    raise Closed(f"stream {self.id} reset")
                if s.closed:
                    raise Closed(f"connection closed ({s.close_reason})")
                n = min(len(view), self.send_window, YAMUX_WINDOW)
                self.send_window -= n
                flags = self._flags_for_send()
            s.send_frame(Y_DATA, flags, self.id, n, bytes(view[:n]))
            view = view[n:]

    def finish(self):
        """Finish our half (yamux FIN)."""
        with self.session.cond:
            if self.local_fin:
                return
            self.local_fin = True
            flags = self._flags_for_send() | F_FIN
        self.session.send_frame(Y_WINDOW_UPDATE, flags, self.id, 0)

    def wait_remote_fin(self, timeout: float):
        """Wait until the remote finished its half (data before the FIN is left in the buffer)."""
        s = self.session
        deadline = time.monotonic() + timeout
        with s.cond:
            while not self.remote_fin:
                if self.reset:
                    raise Closed(f"stream {self.id} reset")
                if s.closed:
                    raise Closed(f"connection closed ({s.close_reason})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no FIN on stream {self.id}")
                s.cond.wait(left)


class Session:
    """A yamux client session over a Noise transport."""

    def __init__(self, sock: socket.socket, noise: NoiseConnection, client: bool = True):
        self.sock = sock
        self.noise = noise
        self.cond = threading.Condition()
        self.write_lock = threading.Lock()
        self.streams: dict[int, YamuxStream] = {}
        self.inbound: list[YamuxStream] = []
        self.my_parity = 1 if client else 0
        self.next_id = 1 if client else 2
        self.closed = False
        self.close_reason = ""
        self.go_away: Optional[int] = None
        self.pings_answered = 0
        self.ping_replies: dict[int, float] = {}
        self.events: list = []  # (time, description) of notable yamux events
        self.violations: list[str] = []  # things the remote did against the specs
        self.noise_msgs_in = 0
        self.max_noise_in = 0
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- noise transport ----------------------------------------------------------------------

    def _send_plain(self, data: bytes):
        """Encrypt a byte string as one or more Noise transport messages."""
        out = bytearray()
        for i in range(0, len(data), NOISE_MAX_PLAINTEXT):
            ct = self.noise.encrypt(bytes(data[i : i + NOISE_MAX_PLAINTEXT]))
            out += struct.pack(">H", len(ct)) + ct
        self.sock.sendall(out)

    def send_frame(self, typ: int, flags: int, sid: int, length: int, body: bytes = b""):
        hdr = YAMUX_HEADER.pack(YAMUX_VERSION, typ, flags, sid, length)
        with self.write_lock:
            if self.closed:
                raise Closed(f"connection closed ({self.close_reason})")
            try:
                self._send_plain(hdr + body)
            except OSError as e:
                self._mark_closed(f"write failed: {e}")
                raise Closed(str(e))

    def send_split(self, frames: list, piece: int):
        """For tests: yamux frames (typ, flags, sid, body) as one byte stream cut into Noise
        messages of `piece` plaintext bytes, regardless of frame boundaries (section 3)."""
        data = bytearray()
        with self.cond:
            for typ, flags, sid, body in frames:
                st = self.streams.get(sid)
                if typ == Y_DATA and st is not None:
                    if len(body) > st.send_window:
                        raise ValueError("test frames exceed the send window")
                    st.send_window -= len(body)
                data += YAMUX_HEADER.pack(YAMUX_VERSION, typ, flags, sid, len(body)) + body
        with self.write_lock:
            out = bytearray()
            for i in range(0, len(data), piece):
                ct = self.noise.encrypt(bytes(data[i : i + piece]))
                out += struct.pack(">H", len(ct)) + ct
            self.sock.sendall(out)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _read_loop(self):
        pending = bytearray()
        try:
            while True:
                (n,) = struct.unpack(">H", self._recv_exact(2))
                if n == 0:
                    raise ProtocolError("Noise message of length 0")
                pt = self.noise.decrypt(self._recv_exact(n))
                self.noise_msgs_in += 1
                self.max_noise_in = max(self.max_noise_in, n)
                pending += pt
                while len(pending) >= 12:
                    ver, typ, flags, sid, length = YAMUX_HEADER.unpack_from(pending, 0)
                    if ver != YAMUX_VERSION:
                        raise ProtocolError(f"yamux version {ver}")
                    body_len = length if typ == Y_DATA else 0
                    if len(pending) < 12 + body_len:
                        break
                    body = bytes(pending[12 : 12 + body_len])
                    del pending[: 12 + body_len]
                    self._handle(typ, flags, sid, length, body)
        except EOFError:
            self._mark_closed("eof")
        except OSError as e:
            self._mark_closed(f"socket error: {e}")
        except ProtocolError as e:
            self.violations.append(str(e))
            self._mark_closed(f"protocol error: {e}")
        except Exception as e:  # noqa: BLE001 - a decrypt failure etc.
            self._mark_closed(f"{type(e).__name__}: {e}")

    def _mark_closed(self, reason: str):
        with self.cond:
            if not self.closed:
                self.closed = True
                self.close_reason = reason
                self.events.append((time.monotonic(), f"closed: {reason}"))
            self.cond.notify_all()

    def _handle(self, typ, flags, sid, length, body):
        if typ == Y_PING:
            if flags & F_SYN:
                self.send_frame(Y_PING, F_ACK, 0, length)
                with self.cond:
                    self.pings_answered += 1
            elif flags & F_ACK:
                with self.cond:
                    self.ping_replies[length] = time.monotonic()
                    self.cond.notify_all()
            return
        if typ == Y_GO_AWAY:
            with self.cond:
                self.go_away = length
                self.events.append((time.monotonic(), f"go away {length}"))
                self.cond.notify_all()
            return
        if typ not in (Y_DATA, Y_WINDOW_UPDATE):
            raise ProtocolError(f"yamux frame type {typ}")
        send_ack = False
        with self.cond:
            st = self.streams.get(sid)
            if flags & F_SYN:
                if st is not None or sid % 2 == self.my_parity or sid == 0:
                    raise ProtocolError(f"yamux SYN for stream {sid} (exists or wrong parity)")
                st = YamuxStream(self, sid)
                st.syn_sent = True  # we answer with ACK right away
                self.streams[sid] = st
                self.inbound.append(st)
                self.events.append((time.monotonic(), f"inbound stream {sid}"))
                send_ack = True
            if st is None:
                # A frame for a stream we no longer track (e.g. after a reset): ignore.
                return
            if flags & F_ACK:
                st.acked = True
            if typ == Y_WINDOW_UPDATE:
                st.send_window += length
            else:
                if length > st.recv_window:
                    raise ProtocolError(
                        f"yamux: {length} bytes on stream {sid} with a window of {st.recv_window}"
                    )
                st.recv_window -= length
                st.recv_buf += body
                st.total_received += length
            if flags & F_FIN:
                st.remote_fin = True
                self.events.append((time.monotonic(), f"fin on stream {sid}"))
            if flags & F_RST:
                st.reset = True
                self.events.append((time.monotonic(), f"rst on stream {sid}"))
            self.cond.notify_all()
        if send_ack:
            self.send_frame(Y_WINDOW_UPDATE, F_ACK, sid, 0)

    # -- API ----------------------------------------------------------------------------------

    def open_stream(self) -> YamuxStream:
        with self.cond:
            sid = self.next_id
            self.next_id += 2
            st = YamuxStream(self, sid)
            self.streams[sid] = st
        return st

    def accept_stream(self, timeout: float) -> YamuxStream:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.inbound:
                if self.closed:
                    raise Closed(f"connection closed ({self.close_reason}) while accepting")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no inbound stream")
                self.cond.wait(left)
            return self.inbound.pop(0)

    def ping(self, opaque: int, timeout: float) -> float:
        start = time.monotonic()
        self.send_frame(Y_PING, F_SYN, 0, opaque)
        with self.cond:
            while opaque not in self.ping_replies:
                if self.closed:
                    raise Closed(self.close_reason)
                left = start + timeout - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no yamux ping reply")
                self.cond.wait(left)
            return self.ping_replies[opaque] - start

    def wait_closed(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("connection still open")
                self.cond.wait(left)
            return self.close_reason

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._mark_closed("closed locally")


# --------------------------------------------------------------------------------------------
# Sections 1 and 2: dial, preamble, refusal record, handshake
# --------------------------------------------------------------------------------------------


def preamble(suite: int, flags: int = 0, magic: bytes = MAGIC, version: int = VERSION) -> bytes:
    return magic + bytes([version, suite, flags])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"eof after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _read_noise_msg(sock: socket.socket) -> bytes:
    (n,) = struct.unpack(">H", _recv_exact(sock, 2))
    if n == 0:
        # Section 1.1: a length of 0 where message 2 would be is the refusal record.
        rest = _recv_exact(sock, 10)
        if rest[:6] != REFUSE_MAGIC or rest[6] != 1:
            raise ProtocolError(f"length 0 followed by {rest.hex()} (not a refusal record)")
        limit = rest[7]
        (retry,) = struct.unpack("<H", rest[8:10])
        raise Refused(limit, retry)
    return _recv_exact(sock, n)


def _write_noise_msg(sock: socket.socket, msg: bytes):
    sock.sendall(struct.pack(">H", len(msg)) + msg)


@dataclass
class Handshake:
    sock: socket.socket
    noise: NoiseConnection
    remote: RemoteIdentity
    remote_static: bytes
    session_tag: bytes
    suite: int


def handshake(
    sock: socket.socket,
    identity: Identity,
    suite: int = 1,
    expected_peer: Optional[bytes] = None,
    preamble_bytes: Optional[bytes] = None,
    prologue: Optional[bytes] = None,
    timeout: float = 10.0,
    payload3: Optional[Callable[[bytes], bytes]] = None,
) -> Handshake:
    """Dialler side of sections 1 and 2. Raises Refused for a refusal record."""
    sock.settimeout(timeout)
    pre = preamble_bytes if preamble_bytes is not None else preamble(suite)
    static = X25519PrivateKey.generate()
    static_priv = static.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    static_pub = static.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    noise = NoiseConnection.from_name(SUITES[suite].encode())
    noise.set_as_initiator()
    noise.set_prologue(prologue if prologue is not None else pre)
    noise.set_keypair_from_private_bytes(Keypair.STATIC, static_priv)
    noise.start_handshake()
    # The preamble and message 1 (empty payload) go out together.
    msg1 = noise.write_message(b"")
    sock.sendall(pre + struct.pack(">H", len(msg1)) + bytes(msg1))
    msg2 = _read_noise_msg(sock)
    payload2 = noise.read_message(msg2)
    rs = noise.noise_protocol.handshake_state.rs.public_bytes
    # Strict checks on the responder, before message 3.
    remote = parse_identity_payload(bytes(payload2), rs)
    if remote.peer_id == identity.public:
        raise ProtocolError("self-dial: the responder proved our own identity")
    if expected_peer is not None and remote.peer_id != expected_peer:
        raise ProtocolError(
            f"responder is {peer_id_to_text(remote.peer_id)}, expected {peer_id_to_text(expected_peer)}"
        )
    p3 = payload3(static_pub) if payload3 is not None else identity.payload(static_pub)
    msg3 = noise.write_message(p3)
    _write_noise_msg(sock, bytes(msg3))
    assert noise.handshake_finished
    sock.settimeout(None)
    return Handshake(sock, noise, remote, rs, noise.get_handshake_hash(), suite)


# --------------------------------------------------------------------------------------------
# Section 3 and 5: the sinew connection
# --------------------------------------------------------------------------------------------


class FrameStream:
    """Sinew frames over one yamux stream."""

    def __init__(self, ystream: YamuxStream, cap: int):
        self.y = ystream
        self.dec = FrameDecoder(cap)
        self.eof = False

    def read_frame(self, timeout: float) -> Optional[Frame]:
        """The next frame, or None at a clean end of stream."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.dec.next()
            if f is not None:
                return f
            if self.eof:
                if self.dec.pending():
                    raise ProtocolError(f"stream {self.y.id} ended inside a frame")
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame on stream {self.y.id}")
            data = self.y.recv(256 * 1024, left)
            if not data:
                self.eof = True
            else:
                self.dec.feed(data)

    def write_frame(self, frame_bytes: bytes, timeout: float = 10.0):
        self.y.write(frame_bytes, timeout)


class SinewConnection:
    def __init__(self, hs: Handshake, identity: Identity, addr: tuple):
        self.hs = hs
        self.identity = identity
        self.addr = addr
        self.session = Session(hs.sock, hs.noise, client=True)
        self.control: Optional[FrameStream] = None
        self.msg_out: Optional[FrameStream] = None
        self.msg_in: Optional[FrameStream] = None
        self.remote_identify: Optional[Identify] = None
        self.remote_disconnect: Optional[tuple] = None
        self.control_log: list[Frame] = []
        self.pings_answered = 0
        self.next_request_id = 1
        self._lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------------

    @classmethod
    def dial(
        cls,
        host: str,
        port: int,
        suite: int = 1,
        identity: Optional[Identity] = None,
        expected_peer: Optional[bytes] = None,
        control_version: int = CONTROL_STREAM_VERSION,
        send_identify: bool = True,
        timeout: float = 10.0,
    ) -> "SinewConnection":
        identity = identity or Identity.generate()
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hs = handshake(sock, identity, suite, expected_peer, timeout=timeout)
        except BaseException:
            sock.close()
            raise
        conn = cls(hs, identity, (host, port))
        conn.open_control(control_version)
        if send_identify:
            conn.send_identify()
        return conn

    @property
    def remote_peer(self) -> bytes:
        return self.hs.remote.peer_id

    def open_control(self, version: int = CONTROL_STREAM_VERSION):
        y = self.session.open_stream()
        self.control = FrameStream(y, CAP_CONTROL_STREAM)
        self.control.write_frame(encode_frame(OP_CONTROL_STREAM, struct.pack("<H", version)))

    def my_identify(self) -> Identify:
        return Identify(
            boot_nonce=self.identity.boot_nonce,
            observed_address=f"tcp://{self.addr[0]}:{self.addr[1]}",
        )

    def send_identify(self, ident: Optional[Identify] = None):
        self.send_control(encode_frame(OP_IDENTIFY, (ident or self.my_identify()).encode()))

    def new_request_id(self) -> int:
        with self._lock:
            rid = self.next_request_id
            self.next_request_id += 1
            return rid

    # -- the system lane ----------------------------------------------------------------------

    def send_control(self, frame_bytes: bytes):
        self.control.write_frame(frame_bytes)

    def _handle_system(self, f: Frame) -> bool:
        """Answer what the protocol requires; True if the frame was consumed here."""
        if f.opcode == OP_IDENTIFY and not (f.flags & FL_KINDS):
            self.remote_identify = Identify.decode(f.payload)
            return True
        if f.opcode == OP_PING and f.is_request:
            self.send_control(
                encode_frame(OP_PONG, f.payload, FL_RESPONSE, request_id=f.request_id)
            )
            self.pings_answered += 1
            return True
        if f.opcode == OP_KEEPALIVE and not (f.flags & FL_KINDS):
            self.send_control(encode_frame(OP_KEEPALIVE_RESPONSE))
            return True
        if f.opcode == OP_KEEPALIVE_RESPONSE:
            return True
        if f.opcode == OP_DISCONNECT:
            self.remote_disconnect = decode_disconnect(f.payload)
        return False

    def recv_control(
        self, timeout: float, match: Callable[[Frame], bool] = lambda f: True
    ) -> Optional[Frame]:
        """Read control frames until one matches (None at the end of the control stream)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching control frame")
            f = self.control.read_frame(left)
            if f is None:
                return None
            if f.opcode >= OP_APP_MIN and not f.is_error:
                raise ProtocolError(f"application frame on the control stream: {f}")
            if f.flags & FL_LARGE:
                raise ProtocolError(f"LARGE frame on the control stream: {f}")
            self.control_log.append(f)
            consumed = self._handle_system(f)
            if match(f) and (not consumed or f.opcode == OP_IDENTIFY):
                return f

    def wait_identify(self, timeout: float) -> Identify:
        if self.remote_identify is None:
            self.recv_control(timeout, lambda f: f.opcode == OP_IDENTIFY)
        return self.remote_identify

    def ping(self, payload: bytes, timeout: float = 5.0) -> Frame:
        rid = self.new_request_id()
        self.send_control(encode_frame(OP_PING, payload, FL_REQUEST, request_id=rid))
        return self.recv_control(
            timeout, lambda f: f.request_id == rid and (f.is_response or f.is_error)
        )

    def disconnect(self, code: int, message: str):
        self.send_control(encode_frame(OP_DISCONNECT, encode_disconnect(code, message)))
        try:
            self.control.y.finish()
        except Closed:
            pass  # the remote may close the connection as soon as it read the DISCONNECT

    # -- the application lane -----------------------------------------------------------------

    def open_message_stream(self):
        y = self.session.open_stream()
        self.msg_out = FrameStream(y, CAP_MESSAGE_STREAM)
        self.msg_out.write_frame(encode_frame(OP_MESSAGE_STREAM))

    def send_app(self, frame_bytes: bytes, timeout: float = 10.0):
        if self.msg_out is None:
            self.open_message_stream()
        self.msg_out.write_frame(frame_bytes, timeout)

    def request(self, opcode: int, payload: bytes, timeout: float = 10.0) -> int:
        rid = self.new_request_id()
        self.send_app(encode_frame(opcode, payload, FL_REQUEST, request_id=rid), timeout)
        return rid

    def accept_message_stream(self, timeout: float) -> FrameStream:
        """Wait for the remote's message stream (its first frame is MESSAGE_STREAM)."""
        deadline = time.monotonic() + timeout
        while self.msg_in is None:
            y = self.session.accept_stream(max(0.0, deadline - time.monotonic()))
            fs = FrameStream(y, CAP_MESSAGE_STREAM)
            # The first frame: at most 64 bytes after the length field, a plain message.
            fs.dec.max_length = CAP_FIRST_FRAME_AFTER_LENGTH
            first = fs.read_frame(max(0.0, deadline - time.monotonic()))
            if first is None:
                raise ProtocolError(f"inbound stream {y.id} ended before its first frame")
            if first.flags & FL_KINDS:
                raise ProtocolError(f"first frame of stream {y.id} is not a plain message: {first}")
            fs.dec.max_length = None
            if first.opcode == OP_MESSAGE_STREAM:
                self.msg_in = fs
            else:
                raise ProtocolError(f"unexpected inbound stream {y.id}: first frame {first}")
        return self.msg_in

    def recv_app(self, timeout: float) -> Optional[Frame]:
        deadline = time.monotonic() + timeout
        fs = self.accept_message_stream(timeout)
        f = fs.read_frame(max(0.0, deadline - time.monotonic()))
        if f is not None:
            if f.opcode < OP_APP_MIN or f.is_error:
                raise ProtocolError(f"system frame on the message stream: {f}")
            if f.flags & FL_LARGE:
                raise ProtocolError(f"LARGE frame on the message stream: {f}")
        return f

    def close(self):
        self.session.close()
