from __future__ import annotations

import io
import json
import logging
import threading

import pytest
import structlog
from structlog.testing import capture_logs

from stratagem.errors import ConfigError
from stratagem.logging import bind_run, configure_logging, get_logger, redact_processor

KEY = "sk-live-abcdefghijklmnopqrstuvwx"


@pytest.fixture(autouse=True)
def _reset_structlog() -> object:
    yield
    structlog.reset_defaults()
    for name in ("openai", "httpx", "httpx2", "langgraph"):
        lib = logging.getLogger(name)
        lib.handlers = []
        lib.propagate = True
        lib.setLevel(logging.NOTSET)


def test_json_lines_carry_bound_context_and_no_secrets() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, cache_loggers=False)
    log = get_logger()
    with bind_run(run_id="r1", topology="refine"):
        log.info("llm.call", role="judge", prompt_tokens=40, api_key=KEY,
                 note=f"Authorization: Bearer {KEY}")
    log.info("after")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    first, second = lines
    assert first["event"] == "llm.call" and first["run_id"] == "r1"
    assert first["prompt_tokens"] == 40  # token counts are not secrets
    assert first["api_key"] == "[REDACTED]"
    assert KEY not in out.getvalue()
    assert "run_id" not in second


def test_stdlib_records_from_dependencies_are_redacted_too() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, level="debug", cache_loggers=False)
    logging.getLogger("openai").warning("Retrying request with Bearer %s", KEY)
    logging.getLogger("openai").debug("request options: secret")  # held at WARNING
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["logger"] == "openai" and "[REDACTED]" in record["event"]
    assert KEY not in line


def test_registered_and_environment_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from stratagem.logging import register_secret

    monkeypatch.setenv("OPENAI_API_KEY", "plainlookingvalue42")
    register_secret("another-opaque-token-value")
    event = redact_processor(None, "info", {
        "event": "x plainlookingvalue42 y another-opaque-token-value"})
    assert event["event"] == "x [REDACTED] y [REDACTED]"


def test_context_is_isolated_per_thread_branch() -> None:
    seen: dict[int, object] = {}

    def branch(i: int) -> None:
        with bind_run(node="solver", branch=i), capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            get_logger().info("step")
        seen[i] = logs[0].get("branch")

    threads = [threading.Thread(target=branch, args=(i,)) for i in range(1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {0: 0}


def test_console_format_and_bad_options() -> None:
    out = io.StringIO()
    configure_logging(fmt="console", stream=out, cache_loggers=False)
    get_logger().info("hello", api_key=KEY)
    assert "hello" in out.getvalue() and KEY not in out.getvalue()
    with pytest.raises(ConfigError, match="log format"):
        configure_logging(fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="log level"):
        configure_logging(level="loud")
