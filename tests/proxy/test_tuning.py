"""The start-up shortcut around mitmproxy's addons package (proxy/tuning.py): still safe after a
mitmproxy upgrade, and invisible to code that wants the package's own names."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

from ccmitm.proxy.tuning import ADDONS_PACKAGE


def test_the_addons_package_init_only_imports_submodules_and_lists_them() -> None:
    """Skipping the package's __init__ is safe only while it does nothing else: a mitmproxy
    release that adds a statement there (a registration, a patch) makes this fail."""
    spec = importlib.util.find_spec(ADDONS_PACKAGE)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.module == ADDONS_PACKAGE, ast.dump(node)
        elif isinstance(node, ast.FunctionDef):
            assert node.name == "default_addons", node.name
        else:
            raise AssertionError(f"unexpected statement in {spec.origin}: {ast.dump(node)[:200]}")


# In a fresh interpreter: this test process may have imported the real package already.
_PROBE = """
import sys
from pathlib import Path
from ccmitm.proxy.tuning import light_addons_package
assert light_addons_package()
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
import mitmproxy.addons
assert mitmproxy.addons.core is core and mitmproxy.addons.proxyserver is proxyserver
print("light", "flask" in sys.modules, "mitmproxy.addons.onboarding" in sys.modules)
names = {type(a).__name__ for a in mitmproxy.addons.default_addons()}
assert {"Core", "Proxyserver", "Onboarding"} <= names, names
from mitmproxy.tools.dump import DumpMaster  # uses the package's names, as mitmdump does
print("full", "flask" in sys.modules)
try:
    mitmproxy.addons.no_such_name
except AttributeError:
    print("missing ok")
"""


def test_the_light_package_imports_only_what_is_asked_and_the_rest_on_demand() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["light False False", "full True", "missing ok"]


def test_the_daemon_does_not_import_the_addons_it_does_not_use() -> None:
    probe = (
        "import asyncio, sys\n"
        "from ccmitm.config.model import Config\n"
        "from ccmitm.proxy.master import Proxy\n"
        "async def build(): Proxy(Config(), [])\n"
        "asyncio.run(build())\n"
        "print(sorted(m for m in ('flask', 'mitmproxy.addons.onboarding', 'ldap3') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


_TYPECHECK_PROBE = """
from mitmproxy import http
from mitmproxy.utils import typecheck
calls = []
real = typecheck.check_option_type
typecheck.check_option_type = lambda *a: calls.append(a) or real(*a)
http.Response.make(200, b"{}")
before = len(calls)
from ccmitm.proxy.tuning import skip_message_type_checks
assert skip_message_type_checks() and not skip_message_type_checks()
calls.clear()
response = http.Response.make(200, b"{}", {"content-type": "application/json"})
request = http.Request.make("POST", "http://127.0.0.1:9/v1/messages", b"{}")
assert response.status_code == 200 and request.host == "127.0.0.1"
print(before > 0, len(calls))
"""


def test_messages_are_built_without_the_debug_type_check() -> None:
    """The check exists (else the shortcut is dead code after an upgrade), and once skipped a
    Request and a Response are still built whole, without a single call of it."""
    from mitmproxy import http

    assert "__post_init__" in http.MessageData.__dict__, "mitmproxy moved its type check"
    result = subprocess.run(
        [sys.executable, "-c", _TYPECHECK_PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "0"]


def test_the_ca_key_loads_without_validation_and_signs_as_before(tmp_path: Path) -> None:
    """mitmproxy still loads its CA key through ``certs.load_pem_private_key`` (else the shortcut
    is dead code after an upgrade), and the store built with the shortcut issues certificates."""
    import inspect

    from mitmproxy import certs

    assert "load_pem_private_key(" in inspect.getsource(certs.CertStore.from_files)
    probe = (
        "from mitmproxy import certs\n"
        "from ccmitm.proxy.tuning import trust_own_ca_key\n"
        f"certs.CertStore.create_store(__import__('pathlib').Path({str(tmp_path)!r}), 'mitmproxy', 2048)\n"
        "assert trust_own_ca_key() and not trust_own_ca_key()\n"
        f"store = certs.CertStore.from_store({str(tmp_path)!r}, 'mitmproxy', 2048)\n"
        "entry = store.get_cert('api.anthropic.com', [])\n"
        "print(entry.cert.cn, entry.cert.issuer == store.default_ca.subject)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["api.anthropic.com", "True"]
