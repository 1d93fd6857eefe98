"""Shared by the whole suite. Being here puts tests/ on sys.path, so `import helpers` works.

`pytest --hypothesis-profile=emulated` for a run under qemu-user (an armhf or arm64 root),
where each example takes many times longer: no deadline, no too_slow health check.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("emulated", deadline=None, suppress_health_check=[HealthCheck.too_slow])
