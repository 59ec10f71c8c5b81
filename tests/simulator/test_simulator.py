"""Behaviour of the Commerce Layer simulator, over real HTTP against `simulator.start(port=0)`."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator import RunningSimulator, start
from simulator import schema as sim_schema
from simulator.auth import decode_payload

ROOT = Path(__file__).resolve().parents[2]
JSON_API = "application/vnd.api+json"
RESOURCE = "/api/customer_payment_sources"
CLIENT = {"grant_type": "client_credentials", "client_id": "sim-client-id", "client_secret": "sim-client-secret"}
PM = "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"


class Client:
    """A thin helper over one requests.Session: tokens, JSON:API calls and admin calls."""

    def __init__(self, url: str, session: requests.Session) -> None:
        self.url = url
        self.session = session
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = self.session.post(f"{self.url}/oauth/token", json=CLIENT, timeout=5)
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Accept": JSON_API, "Authorization": f"Bearer {self.token()}", **extra}

    def get(self, path: str, params: dict[str, str] | None = None, **headers: str) -> requests.Response:
        return self.session.get(f"{self.url}{path}", params=params, headers=self.headers(**headers), timeout=5)

    def patch(self, source_id: str, body: Any, **headers: str) -> requests.Response:
        merged = self.headers(**{"Content-Type": JSON_API, **headers})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.session.patch(f"{self.url}{RESOURCE}/{source_id}", data=data, headers=merged, timeout=5)

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, f"{self.url}/_sim/{path}", json=body, timeout=5)

    def seed(self, *sources: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.admin("POST", "sources", list(sources))
        assert response.status_code == 201, response.text
        created: list[dict[str, Any]] = response.json()["data"]
        return created

    def faults(self, **settings: Any) -> dict[str, Any]:
        response = self.admin("POST", "faults", settings)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def update_body(source_id: str, **attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "customer_payment_sources", "id": source_id, "attributes": attributes}}


def first_error(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith(("application/vnd.api+json", "application/json"))
    error: dict[str, Any] = response.json()["errors"][0]
    return error


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    running = start(port=0)
    yield running
    running.stop()


@pytest.fixture
def cl(sim: RunningSimulator) -> Iterator[Client]:
    sim.reset()
    with requests.Session() as session:
        yield Client(sim.url, session)


# -- tokens -------------------------------------------------------------------------------------------------


def test_token_endpoint_issues_a_unique_jwt_shaped_token_for_valid_credentials(cl: Client) -> None:
    first = cl.session.post(f"{cl.url}/oauth/token", json={**CLIENT, "scope": "market:id:abc"}, timeout=5)
    second = cl.session.post(f"{cl.url}/oauth/token", json=CLIENT, timeout=5)

    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 7200
    assert body["scope"] == "market:id:abc"
    assert isinstance(body["created_at"], int)
    assert second.json()["scope"] == "market:all"
    assert body["access_token"] != second.json()["access_token"]
    payload = decode_payload(body["access_token"])
    assert payload["test"] is True
    assert payload["organization"]["slug"] == "simulator"
    assert payload["application"]["client_id"] == "sim-client-id"
    assert payload["exp"] == body["created_at"] + 7200
    assert cl.admin("GET", "stats").json()["by_route"]["POST /oauth/token"] == 2


def test_token_endpoint_accepts_form_encoded_bodies(cl: Client) -> None:
    response = cl.session.post(f"{cl.url}/oauth/token", data=CLIENT, timeout=5)

    assert response.status_code == 200
    assert response.json()["access_token"].count(".") == 2


def test_token_endpoint_refuses_wrong_credentials_with_invalid_client(cl: Client) -> None:
    response = cl.session.post(f"{cl.url}/oauth/token", json={**CLIENT, "client_secret": "nope"}, timeout=5)

    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            {
                "title": "invalid_client",
                "detail": "Client authentication failed due to unknown client, no client authentication "
                "included, or unsupported authentication method.",
                "code": "UNAUTHORIZED",
                "status": 401,
            }
        ]
    }


def test_token_endpoint_refuses_other_grant_types_with_400(cl: Client) -> None:
    response = cl.session.post(f"{cl.url}/oauth/token", json={**CLIENT, "grant_type": "password"}, timeout=5)

    assert response.status_code == 400
    assert first_error(response)["title"] == "unsupported_grant_type"


def test_live_mode_issues_live_tokens_and_resources() -> None:
    with start(port=0, test_mode=False, sample=True) as live, requests.Session() as session:
        client = Client(live.url, session)
        assert decode_payload(client.token())["test"] is False
        assert client.get(f"{RESOURCE}/XAyRWNUzyN").json()["data"]["meta"]["mode"] == "live"


# -- headers and auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
def test_api_requests_without_the_json_api_accept_type_are_406(cl: Client, accept: str | None) -> None:
    headers = {"Authorization": f"Bearer {cl.token()}"}
    if accept is not None:
        headers["Accept"] = accept
    response = cl.session.get(f"{cl.url}{RESOURCE}", headers=headers, timeout=5)

    assert response.status_code == 406
    assert response.headers["Content-Type"] == JSON_API
    assert first_error(response)["code"] == "NOT_ACCEPTABLE"


def test_accept_lists_and_parameters_containing_the_json_api_type_are_fine(cl: Client) -> None:
    response = cl.get(RESOURCE, Accept=f"application/json, {JSON_API}; q=0.9")

    assert response.status_code == 200


def test_patch_without_the_json_api_content_type_is_415(cl: Client) -> None:
    [source] = cl.seed({"payment_source_token": PM})

    response = cl.patch(source["id"], update_body(source["id"]), **{"Content-Type": "application/json"})

    assert response.status_code == 415
    assert first_error(response)["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("authorization", [None, "Bearer bogus.token.here", "Basic c2ltOnNpbQ=="])
def test_missing_or_unknown_bearer_tokens_are_401_invalid_token(cl: Client, authorization: str | None) -> None:
    headers = {"Accept": JSON_API}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = cl.session.get(f"{cl.url}{RESOURCE}", headers=headers, timeout=5)

    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            {
                "title": "Invalid token",
                "detail": "The access token you provided is invalid.",
                "code": "INVALID_TOKEN",
                "status": "401",
            }
        ]
    }


def test_tokens_expired_through_the_admin_endpoint_are_refused_and_a_new_one_works(cl: Client) -> None:
    assert cl.get(RESOURCE).status_code == 200

    assert cl.admin("POST", "tokens/expire").json() == {"expired": 1}

    assert first_error(cl.get(RESOURCE))["code"] == "INVALID_TOKEN"
    cl._token = None
    assert cl.get(RESOURCE).status_code == 200


def test_tokens_expire_after_their_ttl() -> None:
    with start(port=0, token_ttl=1) as short, requests.Session() as session:
        client = Client(short.url, session)
        assert client.get(RESOURCE).status_code == 200
        time.sleep(1.1)
        response = client.get(RESOURCE)

    assert response.status_code == 401
    assert first_error(response)["code"] == "INVALID_TOKEN"


# -- list, retrieve ---------------------------------------------------------------------------------------


def test_filter_by_payment_source_token_pages_through_thirty_matches(cl: Client) -> None:
    cl.seed(*[{"payment_source_token": "pm_many", "reference": f"r{i:02}"} for i in range(30)])
    cl.seed({"payment_source_token": "pm_other"})
    query = {"filter[q][payment_source_token_eq]": "pm_many", "page[size]": "25"}

    first = cl.get(RESOURCE, query).json()
    second = cl.get(RESOURCE, {**query, "page[number]": "2"}).json()

    assert first["meta"] == {"record_count": 30, "page_count": 2}
    assert [s["attributes"]["reference"] for s in first["data"]] == [f"r{i:02}" for i in range(25)]
    assert [s["attributes"]["reference"] for s in second["data"]] == [f"r{i:02}" for i in range(25, 30)]
    assert "next" in first["links"]
    assert "prev" not in first["links"]
    assert "next" not in second["links"]
    assert "prev" in second["links"]
    assert first["links"]["next"].startswith(f"{cl.url}{RESOURCE}?")
    follow = cl.session.get(first["links"]["next"], headers=cl.headers(), timeout=5).json()
    assert follow["data"] == second["data"]


def test_percent_encoded_filter_brackets_are_understood(cl: Client) -> None:
    cl.seed({"payment_source_token": PM}, {"payment_source_token": "pm_other"})

    response = cl.session.get(
        f"{cl.url}{RESOURCE}?filter%5Bq%5D%5Bpayment_source_token_eq%5D={PM}", headers=cl.headers(), timeout=5
    )

    assert [s["attributes"]["payment_source_token"] for s in response.json()["data"]] == [PM]


def test_list_defaults_to_pages_of_ten(cl: Client) -> None:
    cl.seed(*[{"payment_source_token": f"pm_{i}"} for i in range(12)])

    body = cl.get(RESOURCE).json()

    assert len(body["data"]) == 10
    assert body["meta"] == {"record_count": 12, "page_count": 2}


@pytest.mark.parametrize("size", ["26", "0", "-1", "ten"])
def test_page_size_outside_one_to_twenty_five_is_400(cl: Client, size: str) -> None:
    response = cl.get(RESOURCE, {"page[size]": size})

    assert response.status_code == 400
    assert first_error(response)["code"] == "INVALID_PAGE_VALUE"


def test_unsupported_filter_predicates_are_400_and_blank_filters_are_ignored(cl: Client) -> None:
    cl.seed({"payment_source_token": PM}, {"payment_source_token": "pm_other"})

    refused = cl.get(RESOURCE, {"filter[q][customer_token_eq]": "cus_x"})
    blank = cl.get(RESOURCE, {"filter[q][payment_source_token_eq]": ""})

    assert refused.status_code == 400
    assert first_error(refused)["code"] == "FILTER_NOT_ALLOWED"
    assert blank.json()["meta"]["record_count"] == 2


def test_sparse_fieldsets_return_only_the_requested_attributes(cl: Client) -> None:
    [source] = cl.seed({"payment_source_token": PM, "customer_token": "cus_1", "metadata": {"a": 1}})
    fields = {"fields[customer_payment_sources]": "payment_source_token,metadata"}

    listed = cl.get(RESOURCE, fields).json()["data"][0]
    shown = cl.get(f"{RESOURCE}/{source['id']}", fields).json()["data"]

    for resource in (listed, shown):
        assert resource["attributes"] == {"payment_source_token": PM, "metadata": {"a": 1}}
        assert resource["id"] == source["id"]


def test_unknown_sparse_field_is_400(cl: Client) -> None:
    response = cl.get(RESOURCE, {"fields[customer_payment_sources]": "payment_source_token,expiry"})

    assert response.status_code == 400
    assert first_error(response)["code"] == "INVALID_FIELD"


def test_retrieving_an_unknown_source_is_404_record_not_found(cl: Client) -> None:
    response = cl.get(f"{RESOURCE}/NoSuchThing")

    assert response.status_code == 404
    assert response.json() == {
        "errors": [
            {
                "title": "Record not found",
                "detail": "The requested resource was not found.",
                "code": "RECORD_NOT_FOUND",
                "status": "404",
            }
        ]
    }


def test_resources_have_commerce_layer_shape_and_match_the_official_response_schemas(cl: Client) -> None:
    [created] = cl.seed({"payment_source_token": PM, "customer_token": "cus_1", "name": "XXXX-XXXX-XXXX-1111"})
    source_id = created["id"]

    shown = cl.get(f"{RESOURCE}/{source_id}").json()
    listed = cl.get(RESOURCE).json()

    sim_schema.validator(sim_schema.RESPONSE_SCHEMA).validate(shown)
    sim_schema.validator(sim_schema.RESPONSE_LIST_SCHEMA).validate(listed)
    resource = shown["data"]
    assert len(source_id) == 10
    assert source_id.isalpha()
    assert resource["type"] == "customer_payment_sources"
    assert resource["links"]["self"] == f"{cl.url}{RESOURCE}/{source_id}"
    assert set(resource["relationships"]) == {"customer", "payment_method", "payment_source", "versions"}
    assert resource["relationships"]["customer"]["links"]["related"] == f"{cl.url}{RESOURCE}/{source_id}/customer"
    assert resource["meta"] == {"mode": "test", "organization_id": "simorg"}
    assert resource["attributes"]["created_at"].endswith("Z")


def test_unknown_paths_and_methods_answer_json_api_404_and_405(cl: Client) -> None:
    missing = cl.get("/api/orders")
    not_allowed = cl.session.delete(f"{cl.url}{RESOURCE}/abc", headers=cl.headers(), timeout=5)
    elsewhere = cl.session.get(f"{cl.url}/nothing-here", timeout=5)

    assert missing.status_code == 404
    assert first_error(missing)["code"] == "NOT_FOUND"
    assert not_allowed.status_code == 405
    assert not_allowed.headers["Allow"] == "GET, PATCH"
    assert elsewhere.status_code == 404
    assert elsewhere.headers["Content-Type"] == JSON_API


# -- PATCH ----------------------------------------------------------------------------------------------


def test_patch_replaces_metadata_wholesale_and_bumps_updated_at(cl: Client, sim: RunningSimulator) -> None:
    [source] = cl.seed({"payment_source_token": PM, "metadata": {"keep": "me?", "exp_year": 2030}})
    time.sleep(0.002)

    response = cl.patch(
        source["id"], update_body(source["id"], metadata={"exp_year": 2031}, payment_source_token="pm_new")
    )

    assert response.status_code == 200
    attributes = response.json()["data"]["attributes"]
    assert attributes["metadata"] == {"exp_year": 2031}
    assert attributes["payment_source_token"] == "pm_new"
    assert attributes["updated_at"] > source["attributes"]["updated_at"]
    assert attributes["created_at"] == source["attributes"]["created_at"]
    stored = sim.store.get(source["id"])
    assert stored is not None
    assert stored.metadata == {"exp_year": 2031}


def test_patch_accepts_null_for_nullable_attributes_and_ignores_relationships(cl: Client) -> None:
    [source] = cl.seed({"payment_source_token": PM, "reference": "ref", "metadata": {"a": 1}})
    body = update_body(source["id"], reference=None, metadata=None)
    body["data"]["relationships"] = {"payment_source": {"data": {"type": "stripe_payments", "id": "xYz"}}}

    response = cl.patch(source["id"], body)

    assert response.status_code == 200
    assert response.json()["data"]["attributes"]["reference"] is None
    assert response.json()["data"]["attributes"]["metadata"] is None


def test_patch_with_a_body_id_different_from_the_url_id_is_400(cl: Client, sim: RunningSimulator) -> None:
    [source] = cl.seed({"payment_source_token": PM, "metadata": {"a": 1}})

    response = cl.patch(source["id"], update_body("SomeOtherId", metadata={}))

    assert response.status_code == 400
    assert first_error(response)["status"] == "400"
    stored = sim.store.get(source["id"])
    assert stored is not None
    assert stored.metadata == {"a": 1}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_patch_with_a_body_that_is_not_a_json_object_is_400_bad_request(cl: Client, body: bytes) -> None:
    [source] = cl.seed({"payment_source_token": PM})

    response = cl.patch(source["id"], body)

    assert response.status_code == 400
    assert first_error(response)["code"] == "BAD_REQUEST"


def test_patch_violating_the_schema_is_422_with_one_error_per_violation(cl: Client, sim: RunningSimulator) -> None:
    [source] = cl.seed({"payment_source_token": PM, "metadata": {"a": 1}})
    body = update_body(source["id"], metadata="not an object", reference=42)
    body["data"]["type"] = "orders"

    response = cl.patch(source["id"], body)

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {e["source"]["pointer"] for e in errors} == {
        "/data/attributes/metadata",
        "/data/attributes/reference",
        "/data/type",
    }
    assert {e["code"] for e in errors} == {"VALIDATION_ERROR"}
    assert {e["status"] for e in errors} == {"422"}
    stored = sim.store.get(source["id"])
    assert stored is not None
    assert stored.metadata == {"a": 1}


def test_patch_without_data_id_is_422_pointing_at_the_missing_member(cl: Client) -> None:
    [source] = cl.seed({"payment_source_token": PM})
    body = {"data": {"type": "customer_payment_sources", "attributes": {}}}

    response = cl.patch(source["id"], body)

    assert response.status_code == 422
    assert first_error(response)["source"] == {"pointer": "/data/id"}


def test_patch_of_a_read_only_attribute_is_400_param_not_allowed(cl: Client) -> None:
    [source] = cl.seed({"payment_source_token": PM})

    response = cl.patch(source["id"], update_body(source["id"], name="XXXX-XXXX-XXXX-0000"))

    assert response.status_code == 400
    assert first_error(response)["code"] == "PARAM_NOT_ALLOWED"
    assert first_error(response)["source"] == {"pointer": "/data/attributes/name"}


def test_patch_of_an_unknown_source_is_404(cl: Client) -> None:
    response = cl.patch("NoSuchThing", update_body("NoSuchThing", metadata={}))

    assert response.status_code == 404
    assert first_error(response)["code"] == "RECORD_NOT_FOUND"


def test_concurrent_patches_are_all_applied(cl: Client, sim: RunningSimulator) -> None:
    sources = cl.seed(*[{"payment_source_token": f"pm_{i}"} for i in range(8)])
    token = cl.token()
    statuses: list[int] = []

    def worker(source_id: str) -> None:
        with requests.Session() as session:
            for n in range(5):
                response = session.patch(
                    f"{cl.url}{RESOURCE}/{source_id}",
                    json=update_body(source_id, metadata={"n": n}),
                    headers={"Accept": JSON_API, "Content-Type": JSON_API, "Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                statuses.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(s["id"],)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 40
    assert all(source.metadata == {"n": 4} for source in sim.store.all())
    assert cl.admin("GET", "stats").json()["updates_applied"] == 40


# -- faults ---------------------------------------------------------------------------------------------


def test_down_answers_503_to_the_api_but_not_to_admin_or_token_requests(cl: Client) -> None:
    cl.token()
    cl.faults(down=True)

    api = cl.get(RESOURCE)
    token = cl.session.post(f"{cl.url}/oauth/token", json=CLIENT, timeout=5)
    health = cl.admin("GET", "health")

    assert api.status_code == 503
    assert first_error(api)["code"] == "SERVICE_UNAVAILABLE"
    assert token.status_code == 200
    assert health.json() == {"status": "ok"}
    cl.faults(include_auth=True)
    assert cl.session.post(f"{cl.url}/oauth/token", json=CLIENT, timeout=5).status_code == 503


def test_error_rate_one_answers_a_configured_status_without_applying_the_patch(
    cl: Client, sim: RunningSimulator
) -> None:
    [source] = cl.seed({"payment_source_token": PM, "metadata": {"a": 1}})
    cl.token()
    cl.faults(error_rate=1.0, error_statuses=[502])

    response = cl.patch(source["id"], update_body(source["id"], metadata={"b": 2}))

    assert response.status_code == 502
    assert first_error(response)["code"] == "BAD_GATEWAY"
    stored = sim.store.get(source["id"])
    assert stored is not None
    assert stored.metadata == {"a": 1}


def test_rate_429_fault_answers_429_with_rate_limit_headers_and_retry_after(cl: Client) -> None:
    cl.token()
    cl.faults(rate_429=1.0)

    response = cl.get(RESOURCE)

    assert response.status_code == 429
    assert response.headers["X-Ratelimit-Limit"] == "25"
    assert response.headers["X-Ratelimit-Interval"] == "10"
    assert response.headers["X-Ratelimit-Remaining"] == "0"
    assert response.headers["Retry-After"] == "1"
    assert first_error(response)["code"] == "TOO_MANY_REQUESTS"


def test_drop_rate_one_closes_the_connection_without_an_answer(cl: Client) -> None:
    headers = cl.headers()
    cl.faults(drop_rate=1.0)

    with requests.Session() as fresh, pytest.raises(requests.ConnectionError):
        fresh.get(f"{cl.url}{RESOURCE}", headers=headers, timeout=5)

    stats = cl.admin("GET", "stats").json()
    assert stats["dropped"] == 1
    assert cl.admin("GET", "requests").json()["requests"][-1]["status"] == "dropped"


def test_drop_after_rate_applies_the_patch_but_loses_the_answer(cl: Client, sim: RunningSimulator) -> None:
    [source] = cl.seed({"payment_source_token": PM, "metadata": {}})
    headers = cl.headers(**{"Content-Type": JSON_API})
    cl.faults(drop_after_rate=1.0)

    with requests.Session() as fresh, pytest.raises(requests.ConnectionError):
        fresh.patch(
            f"{cl.url}{RESOURCE}/{source['id']}",
            json=update_body(source["id"], metadata={"applied": True}),
            headers=headers,
            timeout=5,
        )

    stored = sim.store.get(source["id"])
    assert stored is not None
    assert stored.metadata == {"applied": True}


def test_latency_fault_delays_the_answer_but_still_processes_the_request(cl: Client, sim: RunningSimulator) -> None:
    [source] = cl.seed({"payment_source_token": PM})
    cl.token()
    cl.faults(latency_ms=300, latency_rate=1.0)

    started = time.monotonic()
    response = cl.patch(source["id"], update_body(source["id"], metadata={"slow": True}))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3
    stored = sim.store.get(source["id"])
    assert stored is not None
    assert stored.metadata == {"slow": True}


def test_source_statuses_fail_patches_to_that_source_only(cl: Client, sim: RunningSimulator) -> None:
    failing, healthy = cl.seed({"payment_source_token": PM}, {"payment_source_token": PM})
    cl.faults(source_statuses={failing["id"]: 422})

    refused = cl.patch(failing["id"], update_body(failing["id"], metadata={"x": 1}))
    accepted = cl.patch(healthy["id"], update_body(healthy["id"], metadata={"x": 1}))
    read = cl.get(f"{RESOURCE}/{failing['id']}")

    assert refused.status_code == 422
    assert first_error(refused)["code"] == "VALIDATION_ERROR"
    assert accepted.status_code == 200
    assert read.status_code == 200
    stored = sim.store.get(failing["id"])
    assert stored is not None
    assert stored.metadata == {}


def test_seeded_faults_give_the_same_decisions_every_time(cl: Client) -> None:
    cl.token()

    def run() -> list[int]:
        cl.faults(reset=True, seed=1234, error_rate=0.5, error_statuses=[500, 503])
        return [cl.get(RESOURCE).status_code for _ in range(20)]

    first, second = run(), run()

    assert first == second
    assert set(first) <= {200, 500, 503}
    assert 200 in first
    assert any(status != 200 for status in first)


def test_fault_settings_merge_validate_and_reset(cl: Client) -> None:
    cl.faults(error_rate=0.25)
    merged = cl.faults(latency_ms=50)
    invalid = cl.admin("POST", "faults", {"error_rate": 2})
    unknown = cl.admin("POST", "faults", {"explode": True})
    cleared = cl.faults(reset=True)

    assert merged["error_rate"] == 0.25
    assert merged["latency_ms"] == 50
    assert invalid.status_code == 400
    assert unknown.status_code == 400
    assert cleared == cl.admin("GET", "faults").json()
    assert cleared["error_rate"] == 0.0
    assert cleared["error_statuses"] == [500, 503]


# -- rate limits ----------------------------------------------------------------------------------------


def test_rate_limit_window_refuses_the_fourth_request_and_recovers_after_the_window(cl: Client) -> None:
    cl.token()
    config = cl.admin("POST", "rate_limits", {"windows": [{"limit": 3, "seconds": 1}], "per": "endpoint"})
    assert config.json() == {"windows": [{"limit": 3, "seconds": 1}], "per": "endpoint"}

    answers = [cl.get(RESOURCE) for _ in range(4)]
    other_endpoint = cl.get(f"{RESOURCE}/NoSuchThing")
    time.sleep(1.05)
    recovered = cl.get(RESOURCE)

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-Ratelimit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert answers[3].headers["X-Ratelimit-Limit"] == "3"
    assert answers[3].headers["X-Ratelimit-Interval"] == "1"
    assert other_endpoint.status_code == 404
    assert recovered.status_code == 200
    assert recovered.headers["X-Ratelimit-Remaining"] == "2"
    assert cl.admin("GET", "stats").json()["rate_limited"] == 1


def test_global_rate_limits_count_all_api_requests_together_and_tokens_not_at_all(cl: Client) -> None:
    cl.admin("POST", "rate_limits", {"windows": [{"limit": 2, "seconds": 60}], "per": "global"})

    cl.token()
    listed = cl.get(RESOURCE)
    missing = cl.get(f"{RESOURCE}/NoSuchThing")
    refused = cl.get(RESOURCE)

    assert (listed.status_code, missing.status_code, refused.status_code) == (200, 404, 429)
    assert cl.admin("POST", "rate_limits", {"windows": []}).json()["windows"] == []
    assert "X-Ratelimit-Limit" not in cl.get(RESOURCE).headers


def test_the_tightest_window_sets_the_rate_limit_headers(cl: Client) -> None:
    windows = [{"limit": 200, "seconds": 60}, {"limit": 5, "seconds": 0.5}]
    cl.admin("POST", "rate_limits", {"windows": windows})

    response = cl.get(RESOURCE)

    assert response.headers["X-Ratelimit-Limit"] == "5"
    assert response.headers["X-Ratelimit-Interval"] == "0.5"
    assert response.headers["X-Ratelimit-Remaining"] == "4"


# -- request log, stats, admin --------------------------------------------------------------------------


def test_request_log_records_api_and_token_requests_with_decoded_args(cl: Client) -> None:
    cl.seed({"payment_source_token": PM})
    cl.get(RESOURCE, {"filter[q][payment_source_token_eq]": PM})
    cl.admin("GET", "health")

    entries = cl.admin("GET", "requests").json()["requests"]

    assert [(e["method"], e["path"]) for e in entries] == [("POST", "/oauth/token"), ("GET", RESOURCE)]
    listing = entries[1]
    assert listing["query"] == f"filter%5Bq%5D%5Bpayment_source_token_eq%5D={PM}"
    assert listing["args"] == {"filter[q][payment_source_token_eq]": [PM]}
    assert listing["headers"]["Accept"] == JSON_API
    assert listing["status"] == 200
    assert listing["body"] is None
    assert entries[0]["body"]["grant_type"] == "client_credentials"
    assert entries[0]["seq"] < listing["seq"]


def test_request_log_since_returns_only_newer_entries_and_delete_clears_it(cl: Client) -> None:
    cl.get(RESOURCE)
    last_seq = cl.admin("GET", "requests").json()["requests"][-1]["seq"]
    cl.get(f"{RESOURCE}/abc")

    newer = cl.admin("GET", f"requests?since={last_seq}").json()["requests"]
    cleared = cl.admin("DELETE", "requests")

    assert [e["path"] for e in newer] == [f"{RESOURCE}/abc"]
    assert cleared.status_code == 204
    assert cl.admin("GET", "requests").json()["requests"] == []
    assert cl.admin("GET", "requests?since=x").status_code == 400


def test_stats_count_requests_by_status_and_route(cl: Client) -> None:
    [source] = cl.seed({"payment_source_token": PM})
    cl.get(RESOURCE)
    cl.get(f"{RESOURCE}/NoSuchThing")
    cl.patch(source["id"], update_body(source["id"], metadata={}))

    stats = cl.admin("GET", "stats").json()

    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 3, "404": 1}
    assert stats["by_route"] == {
        "GET /api/customer_payment_sources": 1,
        "GET /api/customer_payment_sources/:id": 1,
        "PATCH /api/customer_payment_sources/:id": 1,
        "POST /oauth/token": 1,
    }
    assert stats["rate_limited"] == 0
    assert stats["dropped"] == 0
    assert stats["tokens_issued"] == 1


def test_admin_sources_can_be_created_listed_fetched_and_ids_are_unique(cl: Client) -> None:
    created = cl.seed(
        {"id": "FixedId001", "payment_source_token": PM, "metadata": {"a": 1}}, {"payment_source_token": "x"}
    )

    listed = cl.admin("GET", "sources").json()["data"]
    fetched = cl.admin("GET", "sources/FixedId001").json()["data"]
    duplicate = cl.admin("POST", "sources", [{"id": "FixedId001", "payment_source_token": PM}])
    invalid = cl.admin("POST", "sources", [{"customer_token": "cus_1"}])
    missing = cl.admin("GET", "sources/Nope")

    assert [s["id"] for s in listed] == [s["id"] for s in created]
    assert fetched["attributes"]["metadata"] == {"a": 1}
    assert fetched["attributes"]["name"] == "XXXX-XXXX-XXXX-4242"
    assert duplicate.status_code == 409
    assert invalid.status_code == 400
    assert missing.status_code == 404
    assert cl.admin("DELETE", "sources/FixedId001").status_code == 204
    assert cl.get(f"{RESOURCE}/FixedId001").status_code == 404


def test_admin_reset_clears_sources_log_faults_limits_stats_and_tokens(cl: Client) -> None:
    cl.seed({"payment_source_token": PM})
    cl.get(RESOURCE)
    cl.faults(error_rate=0.5)
    cl.admin("POST", "rate_limits", {"windows": [{"limit": 1, "seconds": 1}]})

    assert cl.admin("POST", "reset").status_code == 200

    assert cl.admin("GET", "sources").json()["data"] == []
    assert cl.admin("GET", "requests").json()["requests"] == []
    assert cl.admin("GET", "faults").json()["error_rate"] == 0.0
    assert cl.admin("GET", "rate_limits").json()["windows"] == []
    assert cl.admin("GET", "stats").json()["requests"] == 0
    assert cl.get(RESOURCE).status_code == 401


def test_sample_data_matches_the_sample_stripe_events(cl: Client) -> None:
    reset = cl.admin("POST", "reset", {"sample": True}).json()
    found = cl.get(RESOURCE, {"filter[q][payment_source_token_eq]": PM}).json()["data"]
    legacy = cl.get(RESOURCE, {"filter[q][payment_source_token_eq]": "card_1PgaftB7WZ01zgkWm3waTcFp"}).json()

    assert reset["sample_sources"] == 3
    assert len(found) == 1
    assert found[0]["attributes"]["customer_token"] == "cus_QXg1o8vcGmoR32"
    assert found[0]["attributes"]["metadata"] == {"wallet_label": "Jenny's Visa"}
    assert legacy["meta"]["record_count"] == 1
    with start(port=0, sample=True) as seeded:
        assert len(seeded.store) == 3


# -- robustness and lifecycle ---------------------------------------------------------------------------


def raw_exchange(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_http_gets_json_errors_and_the_server_keeps_serving(cl: Client) -> None:
    garbage = raw_exchange(cl.url, b"GET / HTTX/1.1\r\n\r\n")
    bad_length = raw_exchange(cl.url, b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    form = base64.b64encode(b"sim-client-id:sim-client-secret").decode()
    chunked = raw_exchange(
        cl.url,
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nAuthorization: Basic " + form.encode() + b"\r\n\r\n"
        b"1d\r\ngrant_type=client_credentials\r\n0\r\n\r\n",
    )

    assert garbage.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert b'"code":"BAD_REQUEST"' in garbage
    assert bad_length.startswith(b"HTTP/1.1 400")
    assert b'"errors"' in bad_length
    assert chunked.startswith(b"HTTP/1.1 200")
    assert cl.admin("GET", "health").status_code == 200


def test_stop_closes_open_keep_alive_connections() -> None:
    running = start(port=0)
    with requests.Session() as session:
        assert session.get(f"{running.url}/_sim/health", timeout=5).status_code == 200
        running.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(f"{running.url}/_sim/health", timeout=5)


def test_cli_prints_the_listening_line_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "SIMULATOR_CLIENT_SECRET": "cli-secret-value"}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--sample"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        seeded = process.stdout.readline().strip()
        assert line.startswith("Commerce Layer simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        with requests.Session() as session:
            assert session.get(f"{url}/_sim/health", timeout=5).json() == {"status": "ok"}
            credentials = {**CLIENT, "client_secret": "cli-secret-value"}
            token = session.post(f"{url}/oauth/token", json=credentials, timeout=5).json()["access_token"]
            client = Client(url, session)
            client._token = token
            assert client.get(RESOURCE).json()["meta"]["record_count"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)

    assert process.returncode == 0
    assert seeded == "Seeded 3 sample customer payment sources"
    assert stdout == ""
    assert "GET /_sim/health 200" in stderr
    assert "GET /api/customer_payment_sources 200" in stderr
    assert token not in stderr
    assert "cli-secret-value" not in stderr
