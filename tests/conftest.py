import os

from hypothesis import HealthCheck, settings

# A fixed, small budget for CI; `thorough` for long runs by hand:
#   HYPOTHESIS_PROFILE=thorough python -m pytest
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
