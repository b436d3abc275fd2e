"""Credentials in URLs: found and refused before a URL is stored anywhere.

A URL given as resource or run config lands verbatim in Dagster's run storage and the UI, so
credentials must come from the environment (``~/.netrc``, AWS_* variables, profiles) or an
instance role, as ``storage.specs.store_spec`` already demands of storage options.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

# Query parameters that carry a secret (lower case; X-Amz-* covers presigned S3 URLs).
SECRET_QUERY_KEYS = ("token", "access_token", "api_key", "apikey", "key", "secret", "password", "passwd",
                     "signature", "sig", "auth", "credential", "credentials")


def credentials_in_url(url: str) -> list[str]:
    """What in ``url`` is a credential (e.g. ``"user:password before @"``, ``"query parameter 'token'"``)."""
    parts = urlsplit(str(url))
    found = []
    if parts.password is not None:
        found.append("user:password before @")
    elif parts.username:
        found.append("user name before @")
    for k, _ in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in SECRET_QUERY_KEYS or k.lower().startswith("x-amz-"):
            found.append(f"query parameter {k!r}")
    return found


def url_without_credentials(url: str) -> str:
    """``url`` with any user info and query removed, safe to show in an error or a log."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def refuse_credentials_in_url(url: str, what: str) -> str:
    """``url`` unchanged, or a ValueError naming ``what`` and the fix (never echoing the secret)."""
    found = credentials_in_url(url)
    if found:
        raise ValueError(
            f"{what} {url_without_credentials(url)!r} carries credentials ({', '.join(found)}); a URL in "
            "config is stored verbatim in the run storage and shown in the UI (delete a run that was given "
            "one, `dagster run delete <run_id>`, and rotate the credential). Remove them from the URL and "
            "give them through the environment (~/.netrc for HTTP, AWS_* variables or a profile for S3) "
            "or an instance role.")
    return url
