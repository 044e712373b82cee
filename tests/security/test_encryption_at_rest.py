"""Models stored encrypted: sealed in authenticated chunks, decrypted in memory only, and every way the
file or the key can be wrong is a clear error that names the file and the chunk.

The tiny GGUF is written through the real writer and pulled through the real store; the chunk size is
made small so that the tiny file spans several chunks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from llmasos.errors import DecryptionError, InvalidRequestError, MasterKeyError
from llmasos.library import encrypted
from llmasos.library.store import ModelStore
from llmasos.model.loader import load_model
from llmasos.security import master_key, sealed_file
from llmasos.security.key_rotation import rotate_master_key
from llmasos.security.sealed_buffer import SealedBuffer
from tests.helpers.tiny_model import write_tiny_gguf

CHUNK = 64 * 1024


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealed_file, "DEFAULT_CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(
        encrypted, "encrypt_file", lambda s, t: sealed_file.encrypt_file(s, t, chunk_bytes=CHUNK)
    )


def _decrypt_stream(path: Path) -> bytes:
    out = bytearray()
    sealed_file.decrypt_file(path, out.extend)
    return bytes(out)


def _decrypt_in_memory(path: Path) -> bytes:
    """What the packed cache's load does: the first chunk in this thread, the rest on three threads."""
    with SealedBuffer(path, threads=3) as buffer:
        head = bytes(buffer.prefix(10))
        buffer.start()
        data = buffer.wait()
        assert data[:10] == head
        return data[: buffer.size]


@pytest.fixture(params=["stream", "in_memory"])
def decrypt(request: pytest.FixtureRequest) -> Callable[[Path], bytes]:
    """Both readers of a sealed file: each must give the same plaintext and the same errors."""
    return _decrypt_stream if request.param == "stream" else _decrypt_in_memory


def _chunk_offset(path: Path, index: int) -> int:
    with open(path, "rb") as f:
        _, raw = sealed_file._read_header(f, path)
    return len(raw) + index * (CHUNK + sealed_file.TAG_BYTES)


def _rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o600)
    path.write_bytes(data)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")[0]


@pytest.fixture
def sealed(tmp_path: Path, plain: Path) -> Path:
    target = tmp_path / "tiny.gguf.enc"
    sealed_file.encrypt_file(plain, target, chunk_bytes=CHUNK)
    return target


def test_round_trip_over_several_chunks_and_an_exact_multiple(
    tmp_path: Path, plain: Path, sealed: Path, decrypt: Callable[[Path], bytes]
) -> None:
    assert plain.stat().st_size > 3 * CHUNK
    assert decrypt(sealed) == plain.read_bytes()
    assert plain.read_bytes()[:4096] not in sealed.read_bytes()
    assert sealed.stat().st_mode & 0o777 == 0o600
    exact = tmp_path / "exact.bin"
    exact.write_bytes(os.urandom(2 * CHUNK))
    sealed_file.encrypt_file(exact, tmp_path / "exact.enc", chunk_bytes=CHUNK)
    assert decrypt(tmp_path / "exact.enc") == exact.read_bytes()


def test_a_flipped_byte_names_the_file_and_chunk(sealed: Path, decrypt: Callable[[Path], bytes]) -> None:
    data = bytearray(sealed.read_bytes())
    data[_chunk_offset(sealed, 2) + 100] ^= 0x01
    _rewrite(sealed, bytes(data))
    with pytest.raises(DecryptionError, match=r"tiny\.gguf\.enc: chunk 2 failed authentication"):
        decrypt(sealed)


def test_truncation_is_detected_mid_chunk_and_at_a_chunk_boundary(
    sealed: Path, decrypt: Callable[[Path], bytes]
) -> None:
    data = sealed.read_bytes()
    _rewrite(sealed, data[: _chunk_offset(sealed, 2)])  # whole chunks 0 and 1 left: boundary
    with pytest.raises(DecryptionError, match="truncated after chunk 1"):
        decrypt(sealed)
    _rewrite(sealed, data[: _chunk_offset(sealed, 1) + 500])
    with pytest.raises(DecryptionError, match="chunk 1"):
        decrypt(sealed)


def test_the_in_memory_reader_over_many_reads_and_threads(tmp_path: Path) -> None:
    """More chunks than one preadv takes (sealed_buffer._CHUNKS_PER_READ) on each of three threads,
    a short last chunk, and a file of no bytes at all."""
    data = os.urandom(1024 * 1100 + 77)
    (tmp_path / "big.bin").write_bytes(data)
    sealed_file.encrypt_file(tmp_path / "big.bin", tmp_path / "big.enc", chunk_bytes=1024)
    with SealedBuffer(tmp_path / "big.enc", threads=3) as buffer:
        assert buffer.num_chunks == 1101 and buffer.wait()[: buffer.size] == data
    (tmp_path / "empty.bin").write_bytes(b"")
    sealed_file.encrypt_file(tmp_path / "empty.bin", tmp_path / "empty.enc", chunk_bytes=1024)
    with SealedBuffer(tmp_path / "empty.enc") as buffer:
        buffer.wait()
        assert buffer.size == 0 and bytes(buffer.prefix(8)) == b""


def test_the_in_memory_reader_hands_out_authenticated_chunks_only(sealed: Path) -> None:
    """The header's chunk may be used before the rest is decrypted; a later chunk that fails is still
    an error naming it, and its memory is released (nothing of the file can be used)."""
    data = bytearray(sealed.read_bytes())
    data[_chunk_offset(sealed, 3) + 7] ^= 0x40
    _rewrite(sealed, bytes(data))
    buffer = SealedBuffer(sealed, threads=2)
    assert bytes(buffer.prefix(4)) == b"GGUF"
    buffer.start()
    with pytest.raises(DecryptionError, match=r"tiny\.gguf\.enc: chunk 3 failed authentication"):
        buffer.wait()
    assert buffer._data.closed  # its memory is given back, not left for a caller to read
    with pytest.raises(DecryptionError, match="chunk 3"):  # it stays failed
        buffer.wait()
    buffer.close()
    data[_chunk_offset(sealed, 0) + 1] ^= 0x40
    _rewrite(sealed, bytes(data))
    with SealedBuffer(sealed) as first_bad, pytest.raises(DecryptionError, match="chunk 0 failed auth"):
        first_bad.prefix(4)


def test_reordered_chunks_fail(sealed: Path, decrypt: Callable[[Path], bytes]) -> None:
    data = sealed.read_bytes()
    a, b, c = (_chunk_offset(sealed, i) for i in range(3))
    _rewrite(sealed, data[:a] + data[b:c] + data[a:b] + data[c:])
    with pytest.raises(DecryptionError, match="chunk 0 failed authentication"):
        decrypt(sealed)


def test_wrong_and_missing_master_key(
    sealed: Path, monkeypatch: pytest.MonkeyPatch, decrypt: Callable[[Path], bytes]
) -> None:
    monkeypatch.setenv(master_key.ENV_VAR, master_key.encode_key(master_key.new_key()))
    with pytest.raises(MasterKeyError, match=r"wrapped under master key .* but the configured key is"):
        decrypt(sealed)
    monkeypatch.delenv(master_key.ENV_VAR)
    master_key.key_file().unlink()
    with pytest.raises(MasterKeyError, match="none was found"):
        decrypt(sealed)


def test_a_key_file_others_can_read_is_refused(sealed: Path, decrypt: Callable[[Path], bytes]) -> None:
    os.chmod(master_key.key_file(), 0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        decrypt(sealed)


def test_the_master_key_from_the_environment(
    tmp_path: Path, plain: Path, monkeypatch: pytest.MonkeyPatch, decrypt: Callable[[Path], bytes]
) -> None:
    key = master_key.new_key()
    monkeypatch.setenv(master_key.ENV_VAR, key.hex())
    sealed_file.encrypt_file(plain, tmp_path / "env.enc", chunk_bytes=CHUNK)
    assert not master_key.key_file().exists()
    monkeypatch.setenv(master_key.ENV_VAR, master_key.encode_key(key))  # base64 names the same key
    assert decrypt(tmp_path / "env.enc") == plain.read_bytes()


def test_pull_encrypt_stores_no_plaintext_and_loads_the_same_model(plain: Path, small_chunks: None) -> None:
    store = ModelStore()
    manifest = store.pull(str(plain), name="secret", encrypt=True, progress=False)
    assert manifest.encrypted and manifest.model_path == "tiny.gguf.enc"
    folder = store.root / "secret"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "tiny.gguf.enc"]
    assert plain.read_bytes()[-4096:] not in (folder / "tiny.gguf.enc").read_bytes()
    ours, reference = load_model(store.model_path("secret")), load_model(plain)
    theirs = reference.model.state_dict()
    assert all(torch.equal(value, theirs[name]) for name, value in ours.model.state_dict().items())
    assert ours.tokenizer.encode("hello world") == reference.tokenizer.encode("hello world")


def test_loading_a_tampered_model_is_a_clear_error(plain: Path, small_chunks: None) -> None:
    store = ModelStore()
    store.pull(str(plain), name="secret", encrypt=True, progress=False)
    path = store.model_path("secret")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x80
    _rewrite(path, bytes(data))
    with pytest.raises(DecryptionError, match=r"tiny\.gguf\.enc: chunk \d+ failed authentication"):
        load_model(path)


def test_a_folder_cannot_be_pulled_encrypted(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidRequestError, match="only GGUF models"):
        ModelStore().pull(str(tmp_path / "folder"), encrypt=True, progress=False)


def test_rotation_rewraps_model_headers_and_the_old_key_no_longer_opens(
    plain: Path, small_chunks: None
) -> None:
    store = ModelStore()
    store.pull(str(plain), name="secret", encrypt=True, progress=False)
    old = master_key.key_file().read_text()
    mtime = store.model_path("secret").stat().st_mtime_ns  # what the packed cache is keyed on
    report = rotate_master_key()
    assert report.model_files == 1 and report.new_key_id not in report.old_key_ids
    assert store.model_path("secret").stat().st_mtime_ns == mtime
    assert not master_key.next_key_file().exists()
    assert _decrypt_stream(store.model_path("secret")) == plain.read_bytes()
    master_key.store_key_file(master_key.key_file(), master_key.decode_key(old, "old"))
    with pytest.raises(MasterKeyError, match=f"wrapped under master key {report.new_key_id}"):
        _decrypt_stream(store.model_path("secret"))


def test_an_encrypted_models_packed_cache_is_sealed_and_serves_the_next_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    from llmasos.config import EngineConfig
    from llmasos.engine.engine import LLMEngine
    from llmasos.engine.sampling import SamplingParams
    from llmasos.model import loader, packed_cache
    from tests.helpers.tiny_model import TinySpec

    plain_path, _ = write_tiny_gguf(tmp_path / "q.gguf", TinySpec(qtype=gguf.GGMLQuantizationType.Q4_1))
    path = tmp_path / "q.gguf.enc"
    sealed_file.encrypt_file(plain_path, path, chunk_bytes=CHUNK)
    first = load_model(path, packed_format="int4")
    if first.model.native_layers is None:
        pytest.skip("the cache holds the C++ kernels' layout; they do not build here")
    cache = packed_cache.cache_path(path)
    assert cache.name == "q.gguf.enc.int4.pt.enc" and sealed_file.is_sealed(cache)
    assert not (tmp_path / "q.gguf.enc.int4.pt").exists()

    def not_opened(*_args: object) -> None:
        raise AssertionError("the sealed cache should have served this load")

    monkeypatch.setattr(loader, "open_gguf", not_opened)
    second = load_model(path, packed_format="int4")
    monkeypatch.undo()
    greedy = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    config = EngineConfig(kv_cache_bytes=4 * 1024 * 1024)
    want = LLMEngine(first, config).generate([[1, 5, 9, 14]], greedy)
    assert LLMEngine(second, config).generate([[1, 5, 9, 14]], greedy) == want
