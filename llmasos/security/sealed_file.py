"""Files encrypted at rest as a stream of authenticated AES-256-GCM chunks (the STREAM construction).

Layout: a header, then the chunks.

    magic "LLMOSEC1" | header length (u32) | header JSON: file id, chunk size, master key id, wrapped file key
    chunk 0 | chunk 1 | ... | chunk n-1

Each chunk is the ciphertext of `chunk_bytes` bytes (the last: 0 to chunk_bytes) and a 16-byte tag.

Each file has its own random 256-bit file key, wrapped (AES-GCM) by the master key and kept in the
header, so rotating the master key rewrites the header only. Chunk i is sealed with nonce = i (unique
under a key used for one file only) and associated data = the file's random id + chunk size + i +
whether it is the last chunk,
so a flipped byte, chunks swapped or copied from another file, and a file cut short (even at a chunk
boundary: its new last chunk was not sealed as last) all fail authentication, and the error names the
file and the chunk. Decryption goes to memory only; a caller gets all of the plaintext or an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmasos.errors import DecryptionError, MasterKeyError
from llmasos.security import master_key
from llmasos.storage.files import create_private

MAGIC = b"LLMOSEC1"
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 4 << 20  # 4 MiB: large enough that per-chunk work is noise, small enough to stream
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    file_id: str  # 32 random hex digits: chunks of one file cannot be spliced into another
    chunk_bytes: int
    master_key_id: str
    wrapped_key: bytes  # nonce (12) + AES-GCM(master, file key, aad=MAGIC + file id)

    def encode(self) -> bytes:
        fields = {
            "file_id": self.file_id,
            "chunk_bytes": self.chunk_bytes,
            "master_key_id": self.master_key_id,
            "wrapped_key": self.wrapped_key.hex(),
        }
        body = json.dumps(fields, sort_keys=True).encode()
        return MAGIC + _LENGTH.pack(len(body)) + body

    @property
    def key_context(self) -> bytes:
        return MAGIC + self.file_id.encode()

    def chunk_aad(self, index: int, last: bool) -> bytes:
        return f"{self.file_id}:{self.chunk_bytes}".encode() + struct.pack(">QB", index, int(last))


def is_sealed(path: Path) -> bool:
    """Whether `path` starts as a sealed file does (cheap: reads 8 bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def wrap_key(master: master_key.MasterKey, key: bytes, context: bytes) -> bytes:
    """`key` sealed under the master key, bound to `context` (what the key is for)."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(master.key).encrypt(nonce, key, context)


def unwrap_key(wrapped: bytes, master_key_id: str, context: bytes, what: str) -> bytes:
    """The key inside `wrapped`; MasterKeyError where its master key is not available or not the one."""
    keys = master_key.available_keys()
    master = keys.get(master_key_id)
    if master is None:
        if not keys:
            raise MasterKeyError(master_key.missing_key_message(master_key_id) + f" ({what})")
        have = ", ".join(f"{k} from {m.source}" for k, m in keys.items())
        raise MasterKeyError(
            f"{what} is wrapped under master key {master_key_id}, but the configured key is {have}: "
            "set the master key it was made with; nothing was decrypted"
        )
    try:
        return AESGCM(master.key).decrypt(wrapped[:12], wrapped[12:], context)
    except InvalidTag:
        raise DecryptionError(f"{what}: its wrapped key is damaged; nothing was decrypted") from None


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def encrypt_file(source: Path, target: Path, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
    """Write `source` sealed to `target` (0600), under a fresh file key wrapped by the master key."""
    with open(source, "rb") as stream:
        encrypt_stream(stream, target, chunk_bytes=chunk_bytes)


def encrypt_stream(stream: BinaryIO, target: Path, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
    master = master_key.current_key(create=True)
    file_key, file_id = AESGCM.generate_key(bit_length=256), secrets.token_hex(16)
    header = Header(file_id, chunk_bytes, master.key_id, b"")
    header = Header(file_id, chunk_bytes, master.key_id, wrap_key(master, file_key, header.key_context))
    aead = AESGCM(file_key)
    with os.fdopen(create_private(target), "wb") as out:
        out.write(header.encode())
        index, chunk = 0, stream.read(chunk_bytes)
        while True:
            following = stream.read(chunk_bytes) if len(chunk) == chunk_bytes else b""
            last = not following
            out.write(aead.encrypt(_nonce(index), chunk, header.chunk_aad(index, last)))
            if last:
                break
            index, chunk = index + 1, following
        out.flush()
        os.fsync(out.fileno())


def _read_header(f: BinaryIO, path: Path) -> tuple[Header, bytes]:
    prefix = f.read(len(MAGIC) + _LENGTH.size)
    if prefix[: len(MAGIC)] != MAGIC or len(prefix) < len(MAGIC) + _LENGTH.size:
        raise DecryptionError(f"{path} is not an LLMasOS encrypted file (no LLMOSEC1 header)")
    body = f.read(_LENGTH.unpack(prefix[len(MAGIC) :])[0])
    try:
        fields = json.loads(body)
        header = Header(
            str(fields["file_id"]),
            int(fields["chunk_bytes"]),
            str(fields["master_key_id"]),
            bytes.fromhex(fields["wrapped_key"]),
        )
    except (ValueError, KeyError, TypeError):
        raise DecryptionError(f"{path}: the encryption header is damaged; nothing was decrypted") from None
    if header.chunk_bytes <= 0:
        raise DecryptionError(f"{path}: the encryption header is damaged; nothing was decrypted")
    return header, prefix + body


def decrypt_file(path: Path, write: Callable[[bytes], object]) -> int:
    """Authenticate and decrypt `path` chunk by chunk into `write` (memory: a BytesIO, a memfd);
    returns the plaintext size. On any failure a DecryptionError names the file and chunk, and the
    caller must drop what was written (it is never a whole file)."""
    path = Path(path)
    with open(path, "rb") as f:
        header, _ = _read_header(f, path)
        file_key = unwrap_key(header.wrapped_key, header.master_key_id, header.key_context, str(path))
        aead, size, index = AESGCM(file_key), 0, 0
        sealed_bytes = header.chunk_bytes + TAG_BYTES
        chunk = f.read(sealed_bytes)
        while True:
            following = f.read(sealed_bytes) if len(chunk) == sealed_bytes else b""
            last = not following
            plain = _open_chunk(aead, header, index, chunk, last, path)
            write(plain)
            size += len(plain)
            if last:
                return size
            index, chunk = index + 1, following


@contextlib.contextmanager
def plaintext_in_memory(path: Path) -> Iterator[Path]:
    """A path to the plaintext of sealed `path` that lives in memory only: an anonymous memory file
    (memfd) that a reader may open or map like any file; its memory is freed with its last mapping
    once the `with` ends. A chunk that fails authentication raises before anyone sees a byte."""
    fd = os.memfd_create(f"llmasos-{Path(path).name}", os.MFD_CLOEXEC)
    try:
        decrypt_file(path, lambda chunk: _write_all(fd, chunk))
        yield Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_chunk(aead: AESGCM, header: Header, index: int, chunk: bytes, last: bool, path: Path) -> bytes:
    if len(chunk) < TAG_BYTES:
        raise DecryptionError(f"{path} is truncated in chunk {index}; pull the model again")
    try:
        return aead.decrypt(_nonce(index), chunk, header.chunk_aad(index, last))
    except InvalidTag:
        pass
    if last:
        try:  # sealed as a middle chunk: the file ends early at a chunk boundary
            aead.decrypt(_nonce(index), chunk, header.chunk_aad(index, False))
            raise DecryptionError(f"{path} is truncated after chunk {index}; pull the model again")
        except InvalidTag:
            pass
    raise DecryptionError(
        f"{path}: chunk {index} failed authentication (a changed byte, chunks reordered, or a truncated "
        "file); nothing of it was used, pull the model again"
    )


def rewrap_header(path: Path, master: master_key.MasterKey) -> bool:
    """Re-wrap the file key of `path` under `master` by rewriting its header in place (the chunks are
    bound to the file id, not to the wrapped key, so they stay valid); whether anything changed."""
    with open(path, "r+b") as f:
        header, raw = _read_header(f, path)
        if header.master_key_id == master.key_id:
            return False
        file_key = unwrap_key(header.wrapped_key, header.master_key_id, header.key_context, str(path))
        wrapped = wrap_key(master, file_key, header.key_context)
        new = Header(header.file_id, header.chunk_bytes, master.key_id, wrapped).encode()
        if len(new) != len(raw):  # fixed-width fields: cannot happen unless the header was edited
            raise DecryptionError(f"{path}: the encryption header has an unexpected size; not re-wrapped")
        before = os.fstat(f.fileno())
        f.seek(0)
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    # The plaintext did not change: keep the times, which caches made from the file are keyed on.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return True
