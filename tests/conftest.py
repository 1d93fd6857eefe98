"""Shared by the whole suite. Being here puts tests/ on sys.path, so `import helpers` works.

`pytest --hypothesis-profile=emulated` for a run under qemu-user (an armhf or arm64 root),
where each example takes many times longer: no deadline, no too_slow health check.
"""

import signal

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("emulated", deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A shell starts a background job (`scripts/test &`, nohup) with SIGINT ignored, and children
# inherit that: `pilog tail -f` would then ignore the tests' Ctrl-C. A handler of our own is
# reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx (ours and pilog's in a child process) honours proxy variables; every server the
    # tests talk to is on 127.0.0.1.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
