"""The routing check: every decision of the run replayed; an NGINX one step off fails it."""

from __future__ import annotations

import pytest
from nginx_sim import Nginx, expectations, failover

from lab.checks.base import Verdict
from lab.checks.routing import check_routing
from lab.history import History

pytestmark = pytest.mark.covers("check:routing")


def test_an_nginx_following_its_configuration_passes() -> None:
    """The whole run's decisions follow the configuration: pass, with the count shown."""
    result = check_routing(failover(), expectations(Nginx(fail_timeout_s=4).policy()))
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("decisions") > 300 and result.value("violations") == 0


def test_one_step_off_fails_and_no_log_is_unknown() -> None:
    """max_fails 4 judged against 3 fails; a run without NGINX's log is unknown."""
    policy = Nginx(fail_timeout_s=4).policy()
    off = [check_routing(failover(max_fails=4, seed=seed), expectations(policy))
           for seed in range(3)]
    assert any(r.verdict is Verdict.FAIL and r.details for r in off)
    assert check_routing(History(), expectations(policy)).verdict is Verdict.UNKNOWN
