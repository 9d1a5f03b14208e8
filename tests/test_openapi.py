"""The OpenAPI document lists exactly the routes the app serves, and the live app honours it."""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase
from schemathesis import Case as AnyCase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks

from api import openapi
from api.app import TABLES
from api.app import document as spec
from api.openapi import SPEC_PATH
from provisioner.app.cli import System
from provisioner.catalog import DEFAULT_IMAGES, DEFAULT_PLANS, Catalog
from tests.conftest import ADMIN_SECRET
from tests.test_api_keys_playbooks import PUBLIC as PUBLIC_KEY

AUTH = {"Authorization": f"Bearer {ADMIN_SECRET}"}
SEED = 20251121
EXAMPLES = 15  # per operation and pass (positive, negative)
SEEDED_EXAMPLES = 5  # per operation with an {id}, positive, on a real resource
CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
]
INT32_MAX = 2**31 - 1

Client = TestClient[Any, Any]
Case = AnyCase[Any]


# --- the document lists exactly what the app serves ---------------------------------------------


def documented_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return [
        (method.upper(), path) for path, methods in spec()["paths"].items() for method in methods
    ]


def expand(formatter: str, pattern: re.Pattern[str]) -> list[str]:
    """The paths a dynamic aiohttp resource serves: `{x:a|b}` gives one path per choice."""
    choices: dict[str, list[str]] = {}
    for name, regex in re.findall(r"\(\?P<(\w+)>([^()]*)\)", pattern.pattern):
        plain = re.fullmatch(r"[\w-]+(\|[\w-]+)*", regex)
        choices[name] = regex.split("|") if plain else [f"{{{name}}}"]
    return [
        formatter.format_map(dict(zip(choices, combo, strict=True)))
        for combo in itertools.product(*choices.values())
    ]


def served_operations(app: web.Application) -> list[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, HEAD aside."""
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        paths = [info["path"]] if "path" in info else expand(info["formatter"], info["pattern"])
        served.update((route.method, path) for path in paths)
    return sorted(served)


@pytest.mark.parametrize("catalog", [None, Catalog.of(DEFAULT_PLANS, DEFAULT_IMAGES)])
def test_document_is_valid_openapi(catalog: Catalog | None) -> None:
    schemathesis.openapi.from_dict(spec(catalog)).validate()


async def test_document_lists_every_served_route(client: Client) -> None:
    assert served_operations(client.app) == sorted(documented_operations())


async def test_document_is_served_without_auth_with_the_catalog(
    client: Client, system: System
) -> None:
    response = await client.get(SPEC_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    served = await response.json()
    assert served == spec(system.core.catalog)
    plan = served["components"]["schemas"]["CreateWorkspace"]["properties"]["plan"]
    assert plan["enum"] == [*sorted(system.core.catalog.plans), None]  # optional: default plan


# --- regressions: requests that once gave a 500 or slipped past validation --------------------


@dataclass(frozen=True)
class Regression:
    """A request that once failed (why, in `reason`) and the answers it must now get."""

    reason: str
    target: str  # "METHOD /path" of the request
    expected: frozenset[int]
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    backends: frozenset[str] = frozenset({"sqlite", "postgresql"})


PG = frozenset({"postgresql"})
REGRESSIONS = {
    "limit-unicode-digit": Regression(
        "api/paging.py:13: '²'.isdigit() is True but int('²') raises ValueError -> 500; "
        "test text.isascii() and text.isdigit()",
        "GET /v1/workspaces",
        frozenset({422}),
        {"limit": "²"},
    ),
    "audit-cursor-unicode-digit": Regression(
        "provisioner/audit.py:58-60: same isdigit()/int() mismatch on cursor -> 500",
        "GET /v1/audit",
        frozenset({422}),
        {"cursor": "²"},
    ),
    "audit-cursor-out-of-range": Regression(
        "provisioner/audit.py:60: cursor beyond the id column (int32 on PostgreSQL, int64 on "
        "SQLite) -> OverflowError/DBAPIError -> 500; bound it or answer an empty page",
        "GET /v1/audit",
        frozenset({200, 422}),
        {"cursor": "9" * 20},
    ),
    "token-limit-zero": Regression(
        "provisioner/tokens.py:96: Tokens.list lacks the 1..MAX_PAGE check of the other "
        "listings; limit=0 -> IndexError in Page.from_overfetch (models.py) -> 500",
        "GET /v1/tokens",
        frozenset({422}),
        {"limit": "0"},
    ),
    "token-limit-unbounded": Regression(
        "provisioner/tokens.py:96: no upper bound on limit (201 answers 200; 10**20 -> 500)",
        "GET /v1/tokens",
        frozenset({422}),
        {"limit": "201"},
    ),
    "nul-in-query-postgres": Regression(
        "provisioner/adapters/store/engine.py:66-72: asyncpg CharacterNotInRepertoireError "
        "(NUL) is a DBAPIError, neither Operational nor Interface, so it escapes as 500; "
        "reject NUL at the edge (422) or translate DataError to InvalidInput",
        "GET /v1/workspaces",
        frozenset({200, 422}),
        {"owner": "a\x00b"},
        backends=PG,
    ),
    "nul-in-body-postgres": Regression(
        "same NUL escape, via POST /v1/tokens owner (api/admin.py create_token: any string; "
        "workspace owners must match OWNER_RE)",
        "POST /v1/tokens",
        frozenset({201, 422}),
        body={"role": "viewer", "owner": "a\x00b"},
        backends=PG,
    ),
    "node-port-out-of-range": Regression(
        "provisioner/requests.py:77 check_node has no upper bounds: ssh_port 10**20 -> "
        "OverflowError/DBAPIError in insert_node -> 500; check 1..65535 and capacities <= 2**31-1",
        "POST /v1/nodes",
        frozenset({422}),
        body={"name": "n1", "libvirt_uri": "test:///default", "ssh_port": 10**20},
    ),
    "node-capacity-int32-postgres": Regression(
        "same missing bound: memory_mib 2**40 is stored on SQLite but overflows the int32 "
        "column on PostgreSQL -> 500",
        "POST /v1/nodes",
        frozenset({201, 422}),
        body={
            "name": "n2",
            "libvirt_uri": "test:///default",
            "capacity": {"vcpus": 1, "memory_mib": 2**40, "disk_gib": 1},
        },
        backends=PG,
    ),
    "name-trailing-newline": Regression(
        "provisioner/requests.py:12-13: `$` matches before a final newline, so name 'abc\\n' "
        "(and owner 'bob\\n') pass; libvirt gets domain 'ws-abc\\n-…'; use fullmatch or \\Z",
        "POST /v1/workspaces",
        frozenset({422}),
        body={"plan": "large", "image": "debian-12", "name": "abc\n"},  # gated: no work to drain
    ),
    "duration-unicode-digit": Regression(
        "provisioner/tokens.py:19: `\\d` matches any Unicode digit, so expires '\\u0661h' is 1 hour; "
        "use [0-9] (the documented pattern is read as ASCII by JSON Schema)",
        "POST /v1/tokens",
        frozenset({422}),
        body={"role": "viewer", "owner": "x", "expires": "\u0661h"},
    ),
}


@pytest.mark.parametrize("name", REGRESSIONS)
async def test_regression(client: Client, backend: str, name: str) -> None:
    bug = REGRESSIONS[name]
    method, path = bug.target.split(" ", 1)
    response = await client.request(method, path, params=bug.query, json=bug.body, headers=AUTH)
    assert response.status in bug.expected, await response.text()


async def test_failed_node_registration_leaves_no_trace(client: Client) -> None:
    entry = {"name": "n1", "libvirt_uri": "test:///default"}
    await client.post("/v1/nodes", json=entry | {"ssh_port": 10**20}, headers=AUTH)
    response = await client.post("/v1/nodes", json=entry, headers=AUTH)
    assert response.status == 201, await response.text()


async def test_method_not_allowed_says_which_are(client: Client) -> None:
    response = await client.patch("/v1/workspaces", headers=AUTH)
    assert response.status == 405
    assert set(response.headers.get("Allow", "").replace(" ", "").split(",")) >= {"GET", "POST"}


# --- schemathesis against the live app ----------------------------------------------------------


# Nothing listens there (TEST-NET-1), and the test system runs no onboarding runner anyway.
ONBOARD = {"host": "192.0.2.1", "login_user": "root", "login_password": "pw-seed-1"}
ONBOARD |= {"desired_user": "seed", "generate_key": True}


def seed_store(base_url: str, session: requests.Session) -> dict[str, str]:
    """Ids of real resources for the {id} routes, by collection (the approval is a developer's)."""

    def call(method: str, path: str, body: Any = None, token: str = ADMIN_SECRET) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        response = session.request(method, base_url + path, json=body, headers=headers, timeout=10)
        assert response.ok, response.text
        return response.json()

    dev = call("POST", "/v1/tokens", {"role": "developer", "owner": "dev@example.com"})
    call("POST", "/v1/workspaces", {"plan": "large", "image": "debian-12"}, dev["secret"])
    made = call("POST", "/v1/workspaces", {"plan": "small", "image": "debian-12"})
    return {
        "workspaces": made["workspace"]["id"],
        "operations": made["operation"]["id"],
        "approvals": call("GET", "/v1/approvals")["approvals"][0]["id"],
        "tokens": dev["token"]["id"],
        "onboard": call("POST", "/v1/onboard/requests", ONBOARD, dev["secret"])["id"],
        "keys": call("POST", "/v1/keys", {"public_key": PUBLIC_KEY})["id"],
    }


Pass = tuple[GenerationMode, dict[str, Any], int]


def passes(path: str, ids: dict[str, str]) -> list[Pass]:
    """Generation passes for one operation: positive, negative, and positive on a real {id}."""
    runs: list[Pass] = [
        (GenerationMode.POSITIVE, {}, EXAMPLES),
        (GenerationMode.NEGATIVE, {}, EXAMPLES),
    ]
    if "{id}" in path:
        fixed: dict[str, Any] = {"path_parameters": {"id": ids[path.split("/")[2]]}}
        if path.endswith("/log"):
            fixed["query"] = {"follow": "0"}  # following streams until the operation ends
        runs.append((GenerationMode.POSITIVE, fixed, SEEDED_EXAMPLES))
    return runs


def fuzz(base_url: str, label: str, backend: str) -> list[str]:
    """Schemathesis on one operation over a seeded store; the failures it found."""
    # Every case carries the admin token (sent below), never a generated one, nor extra parameters.
    generation = {"allow-extra-parameters": False, "with-security-parameters": False}
    config = schemathesis.Config.from_dict({"generation": generation})
    schema = schemathesis.openapi.from_url(base_url + SPEC_PATH, config=config)
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    session = requests.Session()
    failures = []
    for mode, fixed, examples in passes(path, seed_store(base_url, session)):
        cases = operation.as_strategy(generation_mode=mode, **fixed)

        @hypothesis.seed(SEED)
        @hypothesis.settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
        @hypothesis.given(case=cases)
        def run(case: Case) -> None:
            case.call_and_validate(
                base_url=base_url, session=session, headers=AUTH, checks=CHECKS, timeout=10
            )

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            if mode == GenerationMode.POSITIVE:
                failures.append(f"{mode.value} {fixed}: no case could be generated")
            # else: no parameter or body to make invalid, so nothing negative to send
        except (Exception, FailureGroup) as error:  # FailureGroup is a BaseExceptionGroup
            failures.append(f"{mode.value} {fixed}: {error}")
    return failures


@pytest.mark.parametrize("label", [f"{m} {p}" for m, p in documented_operations()])
async def test_schemathesis(system: System, backend: str, label: str) -> None:
    async with TestServer(system.api(), host="127.0.0.1") as server:
        base_url = str(server.make_url("")).rstrip("/")
        failures = await asyncio.to_thread(fuzz, base_url, label, backend)
    assert not failures, "\n\n".join(failures)


def test_the_readme_route_table_is_the_generated_one() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index(openapi.MARKDOWN_START)
    end = readme.index(openapi.MARKDOWN_END) + len(openapi.MARKDOWN_END) + 1
    assert readme[start:end] == openapi.markdown(TABLES), (
        "README's route table is stale: paste `python -m api --markdown`"
    )
