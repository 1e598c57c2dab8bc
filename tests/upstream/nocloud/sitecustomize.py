"""Runs upstream's freezer-agent (PyPI `freezer`) without an OpenStack cloud, for the tests and
benchmarks that compare with it on local storage.

Upstream's `Job` builds Nova, Cinder and Glance clients for every action, so a backup to a
local folder fails without Keystone. Python imports `sitecustomize` at start-up from PYTHONPATH:

    PYTHONPATH=tests/upstream/nocloud target/upstream-agent/bin/freezer-agent --storage local ...

replaces only the factory of those clients (`freezer.common.client_manager.get_client_manager`)
by one whose every call answers None. Storages, engines, compression and encryption stay
upstream's own code.
"""

import warnings

# Upstream's dependencies warn about deprecations on every start; the tests read its stderr.
warnings.simplefilter("ignore")


class _NoClients:
    """Stands in for upstream's ClientManager: every method exists and returns None."""

    def __getattr__(self, _name):
        def nothing(*_args, **_kwargs):
            return None

        return nothing


try:
    import freezer.common.client_manager as _cm
except ImportError:  # another interpreter, without upstream's agent: nothing to replace
    pass
else:
    _cm.get_client_manager = lambda *_args, **_kwargs: _NoClients()
