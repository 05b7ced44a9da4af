"""Credentials masked out of anything printed or logged: URIs and free text."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>.*)@(?P<rest>[^@]*)$", re.DOTALL)


def redact_uri(uri: str) -> str:
    """The URI without user:password, query string or fragment (safe to print and log).

    Everything between ``://`` and the last ``@`` is taken as credentials, as SQLAlchemy does, so
    a password holding ``/``, ``?`` or ``#`` does not leak.
    """
    m = _USERINFO.match(uri)
    if m:
        uri = m["scheme"] + m["rest"]
    if "://" in uri:
        uri = re.split(r"[?#]", uri, maxsplit=1)[0]
    return uri


_CRED_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/@]+(?::[^\s@]*)?@")


_TOKEN_IN_TEXT = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|sig|signature|password|secret)=)[^&\s'\"]+"
)


def redact_text(text: str) -> str:
    """Free text (an error message) with credentials in any URI it mentions masked."""
    return _TOKEN_IN_TEXT.sub(r"\1***", _CRED_IN_TEXT.sub(r"\g<scheme>***@", text))
