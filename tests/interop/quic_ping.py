#!/usr/bin/env python3
"""An independent sinew QUIC client: aioquic against a sinew `quic://` listener.

What it does, from docs/protocol.md (section numbers are that document's):

1. a QUIC connection with ALPN ``sinew/1``, presenting the sinew client certificate and key it is
   given as PEM files (mutual authentication, section 2a);
2. reads the server's certificate from the handshake: exactly one certificate, a self-signed
   ECDSA P-256 one, whose non-critical extension ``2.25.7234711583433140489`` is the DER OCTET
   STRING ``04 69`` and 105 bytes (version 01, the 32-byte Ed25519 identity key, a 64-byte
   signature, the u64 LE boot nonce); the key must equal the expected peer id, and the signature
   must verify strictly over ``"sinew-sig:tls-certificate/v1" || 00 || spki || boot_nonce``
   (sections 2a and 6), ``spki`` taken from the certificate's own DER bytes;
3. opens the control stream as a dialler does (section 3): the first client-initiated
   bidirectional QUIC stream, whose first frame is ``CONTROL_STREAM`` (opcode 20) with the
   version ``u16 LE 3``, then its identify (opcode 19, section 5), then a ``PING`` (opcode 10,
   ``REQUEST``, request id 1, 8 random bytes);
4. reads the control stream, answering the listener's pings and keepalives, until the ``PONG``
   (opcode 11, ``RESPONSE``, same id, same payload); then says goodbye (``DISCONNECT`` code 0,
   then FIN, section 3.2), waits for the listener's FIN on the control stream, and closes.

On success it prints one JSON line (``"ok": true``) with what it checked and exits 0. Any failure
prints a JSON line with ``"ok": false`` and the reason, repeats the reason on stderr, and exits 1.

``--no-client-cert`` connects without a certificate, which the listener must refuse: the
script then expects the connection to be closed (a TLS ``certificate_required`` alert is the
QUIC error ``0x100 + 116``); it exits 0 and reports ``"refused": true`` if it was, 1 if the
listener answered a ping instead.

The frame code (encode_frame, FrameDecoder, Identify, disconnect, strict Ed25519) is imported
from tests/interop/sinew_peer.py, the TCP+Noise peer written from the same document, in this
directory; this script keeps only what is QUIC/TLS-specific. Its requirements are those of
tests/interop/requirements.txt (aioquic, cryptography, and noiseprotocol for sinew_peer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys
import time
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aioquic import __version__ as AIOQUIC_VERSION
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)

# The protocol layer shared with the TCP+Noise peer (run as a script: import from this directory).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sinew_peer import (  # noqa: E402
    CAP_CONTROL_STREAM,
    CONTROL_STREAM_VERSION,
    FL_ERROR,
    FL_KINDS,
    FL_LARGE,
    FL_REQUEST,
    FL_RESPONSE,
    OP_APP_MIN,
    OP_CONTROL_STREAM,
    OP_DISCONNECT,
    OP_IDENTIFY,
    OP_KEEPALIVE,
    OP_KEEPALIVE_RESPONSE,
    OP_PING,
    OP_PONG,
    Frame,
    FrameDecoder,
    Identify,
    ProtocolError,
    decode_disconnect,
    ed25519_is_weak,
    encode_disconnect,
    encode_frame,
    sig_message,
    verify_strict,
)

# --------------------------------------------------------------------------------------------
# Constants (docs/protocol.md)
# --------------------------------------------------------------------------------------------

ALPN = "sinew/1"
SERVER_NAME = "sinew"  # section 2a: sent, ignored by the server
EXTENSION_OID = x509.ObjectIdentifier("2.25.7234711583433140489")
EXTENSION_PAYLOAD_LEN = 105
EXTENSION_VERSION = 1

DOMAIN_TLS_CERTIFICATE = b"tls-certificate/v1"

# QUIC error codes of TLS alerts: 0x100 + alert (RFC 9001 section 4.8)
CRYPTO_ERROR_BASE = 0x100
TLS_ALERTS = {
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    80: "internal_error",
    109: "missing_extension",
    116: "certificate_required",
    120: "no_application_protocol",
}
ALERT_CERTIFICATE_REQUIRED = 116


class CheckFailed(Exception):
    """The listener did something docs/protocol.md does not allow (or did not do what it says).

    Malformed frames, identify and disconnect payloads raise sinew_peer's ProtocolError instead;
    both are caught where CheckFailed is."""


# --------------------------------------------------------------------------------------------
# Section 2a: the certificate
# --------------------------------------------------------------------------------------------


def _der_header(der: bytes, pos: int):
    """(tag, offset of the contents, length of the contents) of the DER element at pos."""
    if pos + 2 > len(der):
        raise CheckFailed("certificate: truncated DER")
    tag = der[pos]
    first = der[pos + 1]
    if first < 0x80:
        return tag, pos + 2, first
    count = first & 0x7F
    if count == 0 or count > 4 or pos + 2 + count > len(der):
        raise CheckFailed("certificate: bad DER length")
    length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
    return tag, pos + 2 + count, length


def raw_spki(cert_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo exactly as it appears in the certificate's DER (RFC 5280:
    Certificate = SEQUENCE { tbsCertificate = SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... })."""
    tag, body, _ = _der_header(cert_der, 0)
    if tag != 0x30:
        raise CheckFailed("certificate: not a SEQUENCE")
    tag, pos, _ = _der_header(cert_der, body)  # tbsCertificate
    if tag != 0x30:
        raise CheckFailed("certificate: tbsCertificate is not a SEQUENCE")
    tag, start, length = _der_header(cert_der, pos)
    if tag == 0xA0:  # the explicit version
        pos = start + length
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        _, start, length = _der_header(cert_der, pos)
        pos = start + length
    tag, start, length = _der_header(cert_der, pos)
    if tag != 0x30:
        raise CheckFailed("certificate: subjectPublicKeyInfo is not a SEQUENCE")
    return cert_der[pos : start + length]


def certified_identity(cert: x509.Certificate, label: str) -> dict:
    """Checks a sinew certificate as section 2a says and returns what it proves."""
    der = cert.public_bytes(serialization.Encoding.DER)
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CheckFailed(f"{label} certificate: key is not ECDSA P-256 ({key!r})")
    try:
        cert.verify_directly_issued_by(cert)
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        raise CheckFailed(f"{label} certificate: self-signature does not verify: {e!r}")
    ours = [e for e in cert.extensions if e.oid == EXTENSION_OID]
    if len(ours) != 1:
        raise CheckFailed(f"{label} certificate: {len(ours)} identity extensions, want 1")
    extension = ours[0]
    if extension.critical:
        raise CheckFailed(f"{label} certificate: the identity extension is critical")
    critical_unknown = [
        e.oid.dotted_string
        for e in cert.extensions
        if e.critical and isinstance(e.value, x509.UnrecognizedExtension)
    ]
    if critical_unknown:
        raise CheckFailed(f"{label} certificate: unknown critical extensions {critical_unknown}")
    value = extension.value.value  # extnValue's contents: the DER OCTET STRING
    if len(value) != 2 + EXTENSION_PAYLOAD_LEN or value[:2] != bytes([0x04, EXTENSION_PAYLOAD_LEN]):
        raise CheckFailed(
            f"{label} certificate: extension value is not OCTET STRING 04 69 + 105 bytes: {value[:4].hex()}... ({len(value)} bytes)"
        )
    payload = value[2:]
    if payload[0] != EXTENSION_VERSION:
        raise CheckFailed(f"{label} certificate: extension version {payload[0]}")
    identity = payload[1:33]
    signature = payload[33:97]
    nonce_bytes = payload[97:105]
    spki = raw_spki(der)
    reencoded = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ed25519_is_weak(identity):
        raise CheckFailed(f"{label} certificate: weak identity key")
    signed = sig_message(DOMAIN_TLS_CERTIFICATE, spki + nonce_bytes)
    if not verify_strict(identity, signature, signed):
        raise CheckFailed(f"{label} certificate: the identity signature does not verify")
    return {
        "peer_id": identity.hex(),
        "boot_nonce": struct.unpack("<Q", nonce_bytes)[0],
        "spki_len": len(spki),
        "spki_reencoded_identical": spki == reencoded,
        "extension_critical": extension.critical,
        "self_signature": True,
        "key": "ecdsa-p256",
        "signature_verified": True,
    }


# --------------------------------------------------------------------------------------------
# The QUIC client
# --------------------------------------------------------------------------------------------


class SinewQuicClient(QuicConnectionProtocol):
    """Records what the connection delivers; waiters are woken on every event."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpn: Optional[str] = None
        self.terminated: Optional[ConnectionTerminated] = None
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self._waiter: Optional[asyncio.Future] = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.alpn = event.alpn_protocol
        elif isinstance(event, StreamDataReceived):
            self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.ended.add(event.stream_id)
        elif isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_event(self, deadline: float, what: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed(f"timed out waiting for {what}")
        self._waiter = self._loop.create_future()
        try:
            await asyncio.wait_for(self._waiter, left)
        except asyncio.TimeoutError:
            raise CheckFailed(f"timed out waiting for {what}") from None

    def take(self, stream_id: int) -> bytes:
        buf = self.data.get(stream_id)
        if not buf:
            return b""
        out = bytes(buf)
        buf.clear()
        return out

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()


def termination(event: ConnectionTerminated) -> dict:
    code = event.error_code
    out = {
        "error_code": code,
        "frame_type": event.frame_type,
        "reason": event.reason_phrase,
    }
    if CRYPTO_ERROR_BASE <= code < CRYPTO_ERROR_BASE + 256:
        alert = code - CRYPTO_ERROR_BASE
        out["tls_alert"] = alert
        out["tls_alert_name"] = TLS_ALERTS.get(alert, "unknown")
    return out


class ControlStream:
    """The control stream: sinew frames over one QUIC bidirectional stream."""

    def __init__(self, client: SinewQuicClient, stream_id: int):
        self.client = client
        self.id = stream_id
        self.dec = FrameDecoder(CAP_CONTROL_STREAM)
        self.remote_fin = False

    def write(self, frame: bytes, end: bool = False) -> None:
        self.client.send(self.id, frame, end)

    async def read_frame(self, deadline: float, what: str) -> Optional[Frame]:
        """The next frame, or None at the listener's FIN."""
        while True:
            self.dec.feed(self.client.take(self.id))
            frame = self.dec.next()
            if frame is not None:
                if frame.opcode >= OP_APP_MIN and not frame.flags & FL_ERROR:
                    raise CheckFailed(f"application frame on the control stream: {frame!r}")
                if frame.flags & FL_LARGE:
                    raise CheckFailed(f"LARGE frame on the control stream: {frame!r}")
                return frame
            if self.id in self.client.resets:
                raise CheckFailed(
                    f"the listener reset the control stream (code {self.client.resets[self.id]})"
                )
            if self.id in self.client.ended and not self.client.data.get(self.id):
                if self.dec.pending():
                    raise CheckFailed("the control stream ended inside a frame")
                self.remote_fin = True
                return None
            if self.client.terminated is not None:
                raise CheckFailed(
                    f"connection closed while waiting for {what}: {termination(self.client.terminated)}"
                )
            await self.client.wait_event(deadline, what)


async def session(args, report: dict, holder: list) -> None:
    deadline = time.monotonic() + args.timeout
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        server_name=SERVER_NAME,
        # The sinew certificate is self-signed: checked below as section 2a says, not by a CA.
        verify_mode=ssl.CERT_NONE,
        idle_timeout=max(args.timeout, 5.0),
    )
    own = None
    if not args.no_client_cert:
        configuration.load_cert_chain(args.cert, args.key)
        own = certified_identity(configuration.certificate, "our own")
        report["client_peer_id"] = own["peer_id"]
        report["client_boot_nonce"] = own["boot_nonce"]
    report["client_certificate"] = own is not None

    def create_protocol(*a, **kw):
        protocol = SinewQuicClient(*a, **kw)
        holder.append(protocol)
        return protocol

    async with connect(
        args.host,
        args.port,
        configuration=configuration,
        create_protocol=create_protocol,
        wait_connected=True,
    ) as client:
        quic = client._quic
        report["local_port"] = client._transport.get_extra_info("sockname")[1]
        report["alpn"] = client.alpn
        if client.alpn != ALPN:
            raise CheckFailed(f"ALPN negotiated {client.alpn!r}, want {ALPN!r}")
        tls = quic.tls
        report["cipher_suite"] = tls.key_schedule.cipher_suite.name
        # aioquic has no public accessor for the peer's certificate; it keeps it here.
        server_cert = tls._peer_certificate
        chain = tls._peer_certificate_chain
        if server_cert is None:
            raise CheckFailed("the server sent no certificate")
        report["server_certificates"] = 1 + len(chain)
        if chain:
            raise CheckFailed(f"the server sent {1 + len(chain)} certificates, want exactly one")
        server = certified_identity(server_cert, "the server's")
        report["server"] = server
        if server["peer_id"] != args.peer_id.lower():
            raise CheckFailed(
                f"the server's certificate proves {server['peer_id']}, expected {args.peer_id}"
            )
        report["peer_id_matches"] = True
        if own is not None and server["peer_id"] == own["peer_id"]:
            raise CheckFailed("the server proved our own identity")

        # Section 3: the dialler opens the control stream and writes CONTROL_STREAM first.
        control = ControlStream(client, quic.get_next_available_stream_id(is_unidirectional=False))
        report["control_stream_id"] = control.id
        control.write(encode_frame(OP_CONTROL_STREAM, struct.pack("<H", CONTROL_STREAM_VERSION)))
        # Section 5: the dialler's identify, right after its CONTROL_STREAM frame.
        boot_nonce = own["boot_nonce"] if own else 0
        identify_ours = Identify(
            agent=f"sinew-quic-aioquic/{AIOQUIC_VERSION}",
            boot_nonce=boot_nonce,
            observed_address=f"quic://{args.host}:{args.port}",
        )
        control.write(encode_frame(OP_IDENTIFY, identify_ours.encode()))
        # Section 5: a ping is a REQUEST with opcode 10 and any payload.
        request_id = 1
        payload = os.urandom(8)
        sent = time.monotonic()
        control.write(encode_frame(OP_PING, payload, FL_REQUEST, request_id=request_id))
        report["ping"] = {"request_id": request_id, "payload": payload.hex()}

        pong = None
        answered = 0
        seen = []
        identify = None
        while pong is None:
            frame = await control.read_frame(deadline, "the pong")
            if frame is None:
                raise CheckFailed("the listener finished the control stream before the pong")
            seen.append(frame.opcode)
            if frame.opcode == OP_IDENTIFY and not frame.flags & FL_KINDS:
                identify = Identify.decode(frame.payload)
            elif frame.opcode == OP_PING and frame.flags & FL_REQUEST:
                control.write(encode_frame(OP_PONG, frame.payload, FL_RESPONSE, request_id=frame.request_id))
                answered += 1
            elif frame.opcode == OP_KEEPALIVE and not frame.flags & FL_KINDS:
                control.write(encode_frame(OP_KEEPALIVE_RESPONSE))
            elif frame.opcode == OP_DISCONNECT:
                code, message = decode_disconnect(frame.payload)
                raise CheckFailed(f"the listener disconnected before the pong: code {code}: {message}")
            elif frame.request_id == request_id and frame.flags & FL_ERROR:
                raise CheckFailed(f"the ping was answered with an error: {frame!r}")
            elif frame.request_id == request_id and frame.flags & FL_RESPONSE:
                if frame.opcode != OP_PONG:
                    raise CheckFailed(f"the ping was answered with opcode {frame.opcode}, want 11")
                if frame.payload != payload:
                    raise CheckFailed(
                        f"the pong echoes {frame.payload.hex()}, the ping carried {payload.hex()}"
                    )
                pong = frame
        report["pong"] = {
            "opcode": pong.opcode,
            "request_id": pong.request_id,
            "payload": pong.payload.hex(),
            "flags": pong.flags,
            "rtt_ms": round((time.monotonic() - sent) * 1000, 3),
        }
        report["control_frames_seen"] = seen
        report["pings_answered"] = answered
        if identify is not None:
            report["server_identify"] = {
                "protocol_version": identify.protocol_version,
                "agent": identify.agent,
                "boot_nonce": identify.boot_nonce,
                "observed_address": identify.observed_address,
                "role": identify.role,
                "listen_addresses": identify.listen_addresses,
            }
            # Section 5: the handshake's boot nonce is authoritative; identify repeats it.
            if identify.boot_nonce != server["boot_nonce"]:
                raise CheckFailed(
                    f"identify's boot nonce {identify.boot_nonce} differs from the certificate's {server['boot_nonce']}"
                )

        # Section 3.2: DISCONNECT is the last frame on the control stream, then FIN; the listener
        # closes in turn and finishes its half of the control stream.
        control.write(encode_frame(OP_DISCONNECT, encode_disconnect(0, "done")), end=True)
        while True:
            frame = await control.read_frame(deadline, "the listener's FIN on the control stream")
            if frame is None:
                break
        report["remote_fin"] = control.remote_fin
        client.close(error_code=0, reason_phrase="done")
    report["ok"] = True


async def refused_session(args, report: dict, holder: list) -> None:
    """No client certificate: the listener must close the connection instead of answering."""
    deadline = time.monotonic() + args.timeout
    report["client_certificate"] = False
    try:
        await session(args, report, holder)
    except (CheckFailed, ProtocolError, ConnectionError) as e:
        client = holder[0] if holder else None
        if client is None or client.terminated is None:
            raise CheckFailed(f"failed without a QUIC close from the listener: {e!r}") from None
        report["refused"] = True
        report["termination"] = termination(client.terminated)
        report["ok"] = True
        return
    raise CheckFailed("the listener accepted a client without a certificate and answered its ping")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peer-id", required=True, help="the listener's 32-byte peer id, hex")
    parser.add_argument("--cert", help="our sinew certificate, PEM")
    parser.add_argument("--key", help="its private key, PEM")
    parser.add_argument(
        "--no-client-cert",
        action="store_true",
        help="present no certificate and expect the listener to refuse the connection",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for everything")
    args = parser.parse_args()
    if not args.no_client_cert and not (args.cert and args.key):
        parser.error("--cert and --key are required unless --no-client-cert")
    if len(bytes.fromhex(args.peer_id)) != 32:
        parser.error("--peer-id must be 32 bytes of hex")

    report: dict = {"ok": False, "aioquic": AIOQUIC_VERSION, "expect_refusal": args.no_client_cert}
    holder: list = []
    run = refused_session if args.no_client_cert else session
    try:
        asyncio.run(asyncio.wait_for(run(args, report, holder), args.timeout + 2.0))
    except (
        CheckFailed, ProtocolError, ConnectionError, OSError, asyncio.TimeoutError, ValueError
    ) as e:
        message = str(e) or type(e).__name__
        if isinstance(e, asyncio.TimeoutError):
            message = f"timed out after {args.timeout} s"
        report["ok"] = False
        report["error"] = message
        print(json.dumps(report), flush=True)
        print(f"quic_ping: FAILED: {message}", file=sys.stderr)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
