"""Prepares a fresh Neutrino server for tempest and writes tempest.conf.

Used by run-tempest.sh; standard library only. As the bootstrap admin, through
the public APIs:

* reads the advertised extension aliases (GET /v2.0/extensions): tempest's
  `api_extensions` is exactly that list, so tests of features the server does
  not offer yet are skipped by tempest itself, and tests of new features run
  as soon as the server advertises them;
* creates the external network tempest calls `public_network_id`: a flat
  provider network `public` with the IPv4 subnet 203.0.113.0/24
  (documentation addresses; an API object only, nothing on the host changes).

Prints the configuration it wrote on standard output.
"""

import argparse
import json
import re
import sys
import urllib.error
import urllib.request

PUBLIC_CIDR = "203.0.113.0/24"
PUBLIC_GATEWAY = "203.0.113.1"
PUBLIC_POOL = {"start": "203.0.113.100", "end": "203.0.113.250"}


class ApiError(Exception):
    pass


def call(method, url, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        raise ApiError(f"{method} {url} -> {err.code}: {text}") from None
    except urllib.error.URLError as err:
        raise ApiError(f"{method} {url}: {err.reason}") from None


def admin_token(base, password):
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    resp, _ = call("POST", f"{base}/v3/auth/tokens", body=body)
    token = resp.headers.get("X-Subject-Token")
    if not token:
        raise ApiError("POST /v3/auth/tokens answered without X-Subject-Token")
    return token


def create_public_network(base, token):
    _, net = call(
        "POST",
        f"{base}/v2.0/networks",
        token,
        {
            "network": {
                "name": "public",
                "router:external": True,
                "provider:network_type": "flat",
                "provider:physical_network": "provider",
            }
        },
    )
    net = net["network"]
    call(
        "POST",
        f"{base}/v2.0/subnets",
        token,
        {
            "subnet": {
                "name": "public-v4",
                "network_id": net["id"],
                "ip_version": 4,
                "cidr": PUBLIC_CIDR,
                "gateway_ip": PUBLIC_GATEWAY,
                "allocation_pools": [PUBLIC_POOL],
                "enable_dhcp": False,
            }
        },
    )
    return net["id"]


def render_conf(base, password, log_dir, public_net, aliases, overrides):
    sections = [
        (
            "DEFAULT",
            [
                ("debug", "true"),
                ("log_dir", log_dir),
                ("log_file", "tempest.log"),
                ("use_stderr", "false"),
            ],
        ),
        (
            "auth",
            [
                ("use_dynamic_credentials", "true"),
                # Network tests create their own networks; none per project.
                ("create_isolated_networks", "false"),
                ("admin_username", "admin"),
                ("admin_password", password),
                ("admin_project_name", "admin"),
                ("admin_domain_name", "Default"),
                ("default_credentials_domain_name", "Default"),
            ],
        ),
        (
            "identity",
            [
                ("uri_v3", f"{base}/v3"),
                ("auth_version", "v3"),
                ("region", "RegionOne"),
                ("v3_endpoint_type", "public"),
                ("admin_role", "admin"),
            ],
        ),
        (
            "service_available",
            [
                ("neutron", "true"),
                ("nova", "false"),
                ("cinder", "false"),
                ("glance", "false"),
                ("swift", "false"),
            ],
        ),
        (
            "network",
            [
                ("public_network_id", public_net),
                ("floating_network_name", "public"),
            ],
        ),
        (
            "network-feature-enabled",
            [
                ("api_extensions", ",".join(aliases)),
                ("ipv6", "true"),
                ("ipv6_subnet_attributes", "true"),
                ("floating_ips", "true"),
                ("port_admin_state_change", "true"),
                ("port_security", "true" if "port-security" in aliases else "false"),
            ],
        ),
        # Neutrino enforces the secure-RBAC defaults (project reader/member,
        # admin); tempest then reads as a project reader where it can.
        ("enforce_scope", [("neutron", "true")]),
        ("validation", [("run_validation", "false")]),
    ]
    # --set SECTION.KEY=VALUE: replaces an option above or adds one.
    for (section, key), value in overrides.items():
        options = next((opts for name, opts in sections if name == section), None)
        if options is None:
            options = []
            sections.append((section, options))
        options[:] = [(k, v) for k, v in options if k != key] + [(key, value)]
    out = ["# Written by scripts/tempest/prepare.py for one run; rewritten every run."]
    for name, options in sections:
        out.append("")
        out.append(f"[{name}]")
        out.extend(f"{key} = {value}" for key, value in options)
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--password", required=True, help="the admin's password")
    parser.add_argument("--conf", required=True, help="tempest.conf to write")
    parser.add_argument("--log-dir", required=True, help="where tempest writes tempest.log")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set a tempest.conf option (repeatable), e.g. enforce_scope.neutron=false",
    )
    args = parser.parse_args()
    base = args.url.rstrip("/")
    overrides = {}
    for item in args.set:
        m = re.fullmatch(r"([\w-]+)\.([\w-]+)=(.*)", item)
        if not m:
            parser.error(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[(m.group(1), m.group(2))] = m.group(3)

    try:
        token = admin_token(base, args.password)
        _, body = call("GET", f"{base}/v2.0/extensions", token)
        aliases = [ext["alias"] for ext in body["extensions"]]
        public_net = create_public_network(base, token)
    except (ApiError, KeyError, TypeError, ValueError) as err:
        print(f"prepare.py: {err}", file=sys.stderr)
        return 1

    conf = render_conf(base, args.password, args.log_dir, public_net, aliases, overrides)
    with open(args.conf, "w", encoding="utf-8") as f:
        f.write(conf)
    print(conf, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
