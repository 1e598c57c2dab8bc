"""Logs in to an identity service with the real keystoneauth1, as python-freezerclient and
upstream's scheduler do, and prints what they would use, as JSON.

Usage: python keystoneauth_check.py AUTH_URL USER PASSWORD PROJECT

Checks, with keystoneauth1's own plugins: version discovery and a password login through the
generic `password` plugin (what `OS_AUTH_URL=.../identity/v3` and `OS_*` give), the `backup`
endpoint of the catalog for each interface, a rescoping with the `v3token` plugin, and that a
wrong password is keystoneauth1's `Unauthorized`.
"""

import json
import sys

from keystoneauth1 import exceptions, loading, session

auth_url, user, password, project = sys.argv[1:5]


def password_session(pw):
    auth = loading.get_plugin_loader("password").load_from_options(
        auth_url=auth_url,
        username=user,
        password=pw,
        project_name=project,
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return session.Session(auth=auth)


sess = password_session(password)
token = sess.get_token()
access = sess.auth.get_access(sess)
out = {
    "token": token,
    "user_id": sess.get_user_id(),
    "project_id": sess.get_project_id(),
    "roles": sorted(access.role_names),
    "expires": access.expires.isoformat(),
    "endpoints": {
        interface: sess.get_endpoint(
            service_type="backup", interface=interface, region_name="RegionOne"
        )
        for interface in ("public", "internal", "admin")
    },
}
token_auth = loading.get_plugin_loader("v3token").load_from_options(
    auth_url=auth_url, token=token, project_id=out["project_id"]
)
token_sess = session.Session(auth=token_auth)
out["rescoped_token"] = token_sess.get_token()
try:
    password_session(password + "-wrong").get_token()
    out["wrong_password"] = "accepted"
except exceptions.Unauthorized:
    out["wrong_password"] = "Unauthorized"
print(json.dumps(out))
