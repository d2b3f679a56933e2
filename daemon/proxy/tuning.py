"""Start-up and per-call shortcuts around mitmproxy, each one explicit and checked by a test.

``mitmproxy.addons`` is a package whose ``__init__`` imports every addon mitmproxy ships (flask
for the onboarding app, ldap3 for proxy auth, the playback and export addons, ...), only so that
``default_addons()`` can list them. ccmitm builds its own Master from four of them, yet importing
``mitmproxy.addons.core`` runs that ``__init__`` first: about half of the daemon's import time.

:func:`light_addons_package` registers the package without running its ``__init__``: submodules
import as usual (Python finds them through the package's ``__path__``), and the first lookup of
any other name (``default_addons``, from a DumpMaster or mitmproxy's test helpers in the same
process) runs the real ``__init__`` then, so nothing that needs it sees a difference. It is safe
because that ``__init__`` only imports submodules and defines ``default_addons`` (a test parses it
and fails if a mitmproxy upgrade adds anything else).

:func:`skip_message_type_checks` turns off the run-time type check mitmproxy makes of every
Request and Response it builds (``MessageData.__post_init__``: each field against its annotation,
through ``typing.get_origin`` and ``dataclasses.fields``). It costs more than ccmitm's own routing
of a call. mitmproxy defines that check only ``if __debug__`` (under ``python -O`` it does not
exist), so running without it is a configuration mitmproxy itself supports; ``-O`` is not used
because it would strip every ``assert`` as well. A test fails if the attribute disappears.

:func:`trust_own_ca_key` loads the CA's private key without cryptography's RSA key validation
(``unsafe_skip_rsa_key_validation``): mitmproxy loads the key twice per start (once for the
options, once more in its ``running`` hook), and each validation costs 0.1-0.2 s, a fifth of the
daemon's start. The validation guards against a malformed key from an untrusted source; this key
is the one mitmproxy generated in ccmitm's own confdir (owner-only, checked at every start by
``secure_confdir``), the same trust cryptography's documentation names for skipping it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

ADDONS_PACKAGE = "mitmproxy.addons"


def light_addons_package() -> bool:
    """Register ``mitmproxy.addons`` without its ``__init__``; False if it is already imported
    (then there is nothing to save, and nothing is changed)."""
    if ADDONS_PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(ADDONS_PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)
    initialised = False

    def __getattr__(name: str) -> Any:  # the module-level hook of PEP 562
        nonlocal initialised
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"{ADDONS_PACKAGE}.{name}") is not None:
            # A submodule: import it alone (this is also how `from mitmproxy.addons import core`
            # asks, through hasattr, before it imports the submodule itself).
            return importlib.import_module(f"{ADDONS_PACKAGE}.{name}")
        if not initialised:
            initialised = True
            assert spec.loader is not None
            spec.loader.exec_module(package)  # the real __init__, into this same module object
            if name in package.__dict__:
                return package.__dict__[name]
        raise AttributeError(f"module {ADDONS_PACKAGE!r} has no attribute {name!r}")

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[ADDONS_PACKAGE] = package
    # The parent package gets the attribute as an import would set it.
    parent: ModuleType = importlib.import_module("mitmproxy")
    parent.addons = package  # type: ignore[attr-defined]
    return True


def _no_type_check(self: object) -> None:
    """mitmproxy's MessageData without its debug-only type check (see the module docstring)."""


def skip_message_type_checks() -> bool:
    """Replace ``MessageData.__post_init__`` (the check) with a no-op; False if there is none.

    The dataclass ``__init__`` of Request and Response calls ``__post_init__`` by name, so it
    must stay defined: it is replaced, not deleted."""
    from mitmproxy import http

    current = http.MessageData.__dict__.get("__post_init__")
    if current is None or current is _no_type_check:
        return False
    http.MessageData.__post_init__ = _no_type_check  # type: ignore[method-assign]
    return True


def _load_trusted_pem_private_key(data: bytes, password: bytes | None) -> Any:
    """mitmproxy's ``certs.load_pem_private_key``, without the RSA validation of a key it wrote."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password, unsafe_skip_rsa_key_validation=True)
    except TypeError:  # as mitmproxy's: an unencrypted key loads without the passphrase
        if password is not None:
            return _load_trusted_pem_private_key(data, None)
        raise


def trust_own_ca_key() -> bool:
    """Point mitmproxy's CA key loader at the one above; False if there is no such loader."""
    from mitmproxy import certs

    if getattr(certs, "load_pem_private_key", None) in (None, _load_trusted_pem_private_key):
        return False
    certs.load_pem_private_key = _load_trusted_pem_private_key
    return True
