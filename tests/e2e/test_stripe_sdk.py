"""The real stripe-node client (npm, the version in sdk/package.json) through
idemgate with --error-style stripe: the gateway's own answers become the
SDK's own errors, and a stored unknown outcome is not retried in vain.

The client is installed once per build directory with npm (the npm registry
is reachable where the tests run); node comes with the machine or from
Debian's nodejs package (scripts/deps.sh).
"""

import json
import os
import shutil
import subprocess

import pytest

import test_gateway_cli as cli
from conftest import unique_key
# the idemgate command's fixtures (its gateway_factory, not conftest's)
from test_gateway_cli import echo, gateway_factory, workdir  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
SDK_DIR = os.path.join(HERE, "sdk")


@pytest.fixture(scope="session")
def stripe_node():
    """A directory whose node_modules holds stripe-node."""
    target = os.path.join(cli.BUILD, "node-sdk")
    pkg = os.path.join(SDK_DIR, "package.json")
    stamp = os.path.join(target, "package.json")
    if not (os.path.exists(os.path.join(target, "node_modules", "stripe"))
            and os.path.exists(stamp)
            and open(stamp).read() == open(pkg).read()):
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        shutil.copy(pkg, stamp)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                            "--omit=dev", "--no-package-lock"],
                           cwd=target, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, "npm install failed:\n" + r.stderr
    return target


def run_client(stripe_node, port, key, *args):
    env = dict(os.environ, NODE_PATH=os.path.join(stripe_node, "node_modules"))
    r = subprocess.run(["node", os.path.join(SDK_DIR, "stripe_client.js"),
                        str(port), key] + list(args),
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def stripe_gateway(gateway_factory):
    return gateway_factory("--error-style", "stripe")


def test_stripe_node_raises_its_own_errors_for_the_gateways_answers(
        stripe_node, stripe_gateway, echo):
    key = unique_key()
    before = echo.count
    out = run_client(stripe_node, stripe_gateway.port, key)
    # a create and its retry: one execution, the same object
    assert out["first"]["resolved"] and out["retry"]["resolved"]
    assert out["retry"]["headers"]["idempotent-replayed"] == "true"
    assert out["retry"]["headers"]["stripe-should-retry"] == "false"
    # other parameters: StripeIdempotencyError, not an object without an id
    assert out["mismatch"] == {**out["mismatch"], "resolved": False,
                               "type": "StripeIdempotencyError",
                               "rawType": "idempotency_error",
                               "statusCode": 400}
    assert "can only be used with the same parameters" in \
        out["mismatch"]["message"]
    assert out["invalid"]["type"] == "StripeIdempotencyError"
    assert out["invalid"]["statusCode"] == 400
    assert echo.count - before == 1


def test_stripe_node_gets_an_unknown_outcome_once(stripe_node, workdir, echo):
    # the upstream takes 3 s (the echo server's /sleep/3 prefix), the
    # gateway waits 1 s: the key stores an unknown outcome
    g = cli.Gateway(workdir, echo.url + "/sleep/3",
                    ("--error-style", "stripe", "--upstream-timeout", "1s",
                     "--lease", "10s"))
    try:
        key = unique_key()
        before = echo.count
        out = run_client(stripe_node, g.port, key, "slow")["unknown"]
        assert out["resolved"] is False
        assert out["type"] == "StripeAPIError"
        assert out["rawType"] == "api_error"
        assert out["statusCode"] == 504
        # the SDK's retry met the stored answer, which said not to retry
        assert echo.count - before == 1
    finally:
        g.close()
