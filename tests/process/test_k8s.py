"""The Kubernetes recipe in k8s/ and the Dockerfile: what they promise holds.

- Every metric an alert or a dashboard panel names is one a running proxy exports (a
  live scrape of ``/_failover/metrics`` after traffic that makes every family appear),
  with label names and fixed-set label values it really uses.
- With ``promtool`` (Debian's prometheus package; .ci/run installs it), the rules and
  the dashboard's queries parse, and the alerts fire, and stay quiet, as intended.
- The ConfigMap's config.yaml loads as mounted, and the manifests agree with it and with
  each other: the config path is inside the directory mount (no subPath), the probes hit
  the reserved paths on the listen port, state goes to the writable volume, the
  PodMonitor scrapes the path metrics_on_main serves, the token comes from the Secret.
- Every manifest validates against the Kubernetes schemas (the CRDs have none there and
  are checked for their shape here), and kustomization.yaml lists what it should.

tests/unit/config/test_schema.py also checks the ConfigMap's config.yaml against the JSON Schema.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.k8s import alerts, dashboard_queries, rule_groups

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


# -- promtool: the rules and queries parse, and the alerts fire as intended ----------------


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_the_rules_pass_promtool_check(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    out = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(alerts())} rules found" in out


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    """Each panel's query as a recording rule, with Grafana's variables filled in."""
    rules = []
    for i, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values")):
        expr = query.replace("$__rate_interval", "5m").replace("$namespace", ".*")
        expr = expr.replace("$route", ".*")
        assert "$" not in expr, f"a Grafana variable this test does not fill in: {query}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)


SHOP = {"namespace": "shop", "job": "shop/myapp-failover-proxy"}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """An input series in promtool's notation, from pod myapp-1 unless ``pod`` says."""
    text = ", ".join(f'{k}="{v}"' for k, v in {**SHOP, "pod": "myapp-1", **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def answers(values: str, route: str, source: str, health: str, code: str = "2xx") -> dict:
    labels = {"route": route, "source": source, "health": health, "code_class": code}
    return series("failover_requests_total", values, **labels)


def circuit(values: str, upstream: str, state: str) -> dict[str, str]:
    return series("failover_circuit_state", values, upstream=upstream, state=state)


def firing(alert: str, at: str, *expected: dict[str, str]) -> dict[str, Any]:
    """At ``at``, ``alert`` fires exactly for ``expected`` (labels beyond SHOP)."""
    severity = next(rule["labels"]["severity"] for rule in alerts() if rule["alert"] == alert)
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [
            {"exp_labels": {**SHOP, **labels, "severity": severity}} for labels in expected
        ],
    }


# promtool's notation: "0+90x30" is 0, 90, 180, ... (31 samples, one a minute); "0x5 1x30"
# is six 0s then thirty-one 1s; "_x10" is ten missing samples.
RULE_TESTS = [
    {
        "interval": "1m",
        "input_series": [
            # drivers: 10% of answers from the secondary; search: 2% (under 5%).
            answers("0+90x30", "drivers", "primary", "healthy"),
            answers("0+10x30", "drivers", "secondary", "degraded"),
            answers("0+98x30", "search", "primary", "healthy"),
            answers("0+2x30", "search", "secondary", "degraded"),
        ],
        "alert_rule_test": [
            firing("FailoverSecondaryShareHigh", "4m"),  # pending: not 5 minutes yet
            firing("FailoverSecondaryShareHigh", "12m", {"route": "drivers"}),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series("failover_cache_stale_serves_total", "0x10 1x30"),
            series("failover_default_payloads_total", "0x20 4x30", route="drivers"),
            series("failover_default_payloads_total", "0x40", route="search"),
        ],
        "alert_rule_test": [
            firing("FailoverStaleServed", "9m"),
            firing("FailoverStaleServed", "13m", {}),  # one stale answer is enough
            firing("FailoverStaleServed", "25m"),  # and it clears
            firing("FailoverDefaultServed", "22m", {"route": "drivers"}),
            firing("FailoverDefaultServed", "35m"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # The proxy's own 503: its series is there from the start, the first one pages.
            series("failover_unavailable_total", "0x5 1x30", route="bare"),
            series("failover_unavailable_total", "0x40", route="drivers"),
            # The last upstream's 503 passed through, from minute 10.
            answers("_x10 1+1x10", "passthrough", "primary", "critical", "5xx"),
            # A default payload with a 5xx status is the critical alert's, not a page.
            answers("0+1x30", "drivers", "default", "critical", "5xx"),
        ],
        "alert_rule_test": [
            firing("FailoverUnavailable", "4m"),
            firing("FailoverUnavailable", "7m", {"route": "bare"}),
            firing("FailoverUnavailable", "14m", {"route": "passthrough"}),
            firing("FailoverUnavailable", "30m"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # primary: open from minute 3 on; secondary: open and half-open by turns
            # (its probes keep failing) from the start; backup: open for 3 minutes only.
            circuit("0x2 1x30", "primary", "open"),
            circuit("0x30", "primary", "half_open"),
            circuit("1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0", "secondary", "open"),
            circuit("0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1", "secondary", "half_open"),
            circuit("0 1x3 0x20", "backup", "open"),
            circuit("0x25", "backup", "half_open"),
        ],
        "alert_rule_test": [
            firing("FailoverBreakerOpen", "11m", {"upstream": "secondary"}),
            firing(
                "FailoverBreakerOpen", "14m", {"upstream": "primary"}, {"upstream": "secondary"}
            ),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # myapp-1: writes pile up from minute 2; myapp-2: a backlog draining.
            series("failover_buffer_depth", "0 0 5+5x30", pod="myapp-1"),
            series("failover_buffer_depth", "60-2x30", pod="myapp-2"),
            series("failover_buffer_dead_letters", "0x5 2x10 0x10", pod="myapp-2"),
            series("failover_config_reloads_total", "0x5 1x30", result="failure"),
            series("failover_config_reloads_total", "0+0x35", result="success"),
        ],
        "alert_rule_test": [
            firing("FailoverBufferGrowing", "4m"),
            firing("FailoverBufferGrowing", "12m", {"pod": "myapp-1"}),
            firing("FailoverBufferDeadLetters", "8m", {"pod": "myapp-2"}),
            firing("FailoverBufferDeadLetters", "20m"),
            firing("FailoverConfigReloadFailed", "7m", {}),
            firing("FailoverConfigReloadFailed", "20m"),
        ],
    },
]


@needs_promtool
def test_the_alerts_fire_when_they_should_and_only_then(tmp_path):
    # Annotations are templates checked by `promtool check rules`; left out here so the
    # tests compare what fires (labels), not the wording.
    groups = [
        {
            **group,
            "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]],
        }
        for group in rule_groups()
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tested = {case["alertname"] for test in RULE_TESTS for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alerts()}, "every alert has a unit test"
    unit = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": RULE_TESTS}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    promtool("test", "rules", "tests.yaml", cwd=tmp_path)
