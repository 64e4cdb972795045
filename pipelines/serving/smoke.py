"""The smoke test of a served bento: its family's golden requests (plus one without the API token) against the
real ``bentoml serve``; any unexpected status or answer is a failure."""

from __future__ import annotations

import json

UNKNOWN_ID = 10**12  # an id no dataset uses: exercises the cold paths


def smoke_test(url: str, token: str, requests: list[dict]) -> list[str]:
    """Run the golden requests (plus an unauthenticated one); returns the failures (empty = passed)."""
    import httpx

    failures = []
    headers = {"Authorization": f"Bearer {token}"}
    first = requests[0]
    unauthorized = httpx.post(url + first["path"], json=first["body"], timeout=30)
    if unauthorized.status_code != 401:
        failures.append(f"{first['path']} without a token answered {unauthorized.status_code}, expected 401")
    for request in requests:
        response = httpx.post(url + request["path"], json=request["body"], headers=headers, timeout=30)
        if response.status_code != request["status"]:
            failures.append(f"{request['path']} {json.dumps(request['body'])[:120]} answered {response.status_code} "
                            f"(expected {request['status']}): {response.text[:300]}")  # fmt: skip
        elif "check" in request and not request["check"](response.json()):
            failures.append(f"{request['path']} {json.dumps(request['body'])[:120]}: unexpected answer "
                            f"{response.text[:300]}")  # fmt: skip
    return failures
