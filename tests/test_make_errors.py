"""MakeApiError from JSON, plain-text and HTML bodies, and which statuses are retried."""

import pytest

from watcher.make.errors import MakeApiError, error_from_response, is_retryable


def test_json_error_body_keeps_code_title_detail_and_suberrors():
    body = (
        '{"detail":"Validation failed for 1 parameter(s).","message":"Bad Request","code":"SC400",'
        '"suberrors":[{"message":"Missing value of required parameter \'number\'.","name":"Error"}]}'
    )
    err = error_from_response(400, body, "/scenarios")
    assert (err.status, err.code, err.retryable) == (400, "SC400", False)
    assert "Bad Request: Validation failed" in err.message
    assert "Missing value of required parameter" in err.message
    assert "/scenarios" in str(err)


def test_detail_as_list_is_joined():
    err = error_from_response(403, '{"detail":["a","b"],"message":"Permission denied","code":"SC403"}')
    assert err.message == "Permission denied: a; b"
    assert err.is_auth_error


def test_plain_text_429_is_retryable():
    err = error_from_response(429, "Requests limit for organization exceeded, please try again later.")
    assert err.retryable and err.code is None
    assert err.message.startswith("Requests limit for organization exceeded")


def test_cloudflare_html_page_is_summarised():
    html = "<!DOCTYPE html><html><head><title>Access denied</title></head><body>error code: 1010</body></html>"
    err = error_from_response(403, html)
    assert err.code == "HTML" and not err.retryable
    assert "1010" in err.message and "User-Agent" in err.message
    assert "<" not in err.message
    assert not err.is_auth_error  # a blocked client, not a rejected token


def test_long_bodies_are_clipped():
    err = error_from_response(500, "x" * 5000)
    assert len(err.message) <= 300


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (None, "TIMEOUT", True),
        (400, "SC400", False),
        (401, "IM102", False),
        (403, "SC403", False),
        (404, "SC404", False),
        (406, "IM004", False),
        (418, None, True),
        (429, "SC429", True),
        (429, "IM310", False),
        (500, None, True),
        (502, None, True),
        (503, None, True),
        (504, None, True),
    ],
)
def test_retryability_table(status, code, retryable):
    assert is_retryable(status, code) is retryable
    assert MakeApiError(status, code, "m").retryable is retryable
