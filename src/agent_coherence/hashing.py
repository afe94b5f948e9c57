"""SHA-256 without loading OpenSSL when the input is small.

``hashlib`` loads OpenSSL (libcrypto), which costs a few milliseconds per process: too much for
the Claude Code hook, which starts a process per tool call and hashes only small things (journal
entries, typical source files). CPython's own SHA-256 module loads in a fraction of that but hashes
several times slower, so inputs of ``LARGE`` bytes or more still go to ``hashlib``, and so does
everything once ``hashlib``'s OpenSSL module is loaded anyway. The digests are the same either way.
"""

from __future__ import annotations

import sys

try:
    from _sha2 import sha256 as _builtin_sha256  # type: ignore[import-not-found]  # CPython 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _builtin_sha256  # type: ignore[import-not-found]  # 3.11
    except ImportError:  # a build without the built-in hashes
        _builtin_sha256 = None

LARGE = 4 << 20


# ``hashlib.sha256`` once OpenSSL is loaded (by anything in the process): from then on every hash
# goes there, so the look-up and the import statement are done once, not per call.
_openssl_sha256 = None


def sha256(data: bytes = b"", size_hint: int = 0):
    """A sha256 hash object (``update``, ``hexdigest``). ``size_hint``: how many bytes will be
    hashed in total, when more than ``data`` will follow through ``update``."""
    if _openssl_sha256 is not None:
        return _openssl_sha256(data)
    # Once OpenSSL is loaded anyway (any process that imported hashlib), it costs nothing more.
    if _builtin_sha256 is None or max(size_hint, len(data)) >= LARGE or "_hashlib" in sys.modules:
        return _load_openssl()(data)
    return _builtin_sha256(data)


def _load_openssl():
    global _openssl_sha256
    import hashlib

    _openssl_sha256 = hashlib.sha256
    return _openssl_sha256


def sha256_hex(data: bytes) -> str:
    if _openssl_sha256 is not None:
        return _openssl_sha256(data).hexdigest()
    return sha256(data).hexdigest()
