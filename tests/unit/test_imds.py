"""localcloud/imds.py: the IMDSv2 stand-in answers as the EC2 User Guide says IMDS does.

Every request goes to the stand-in on 127.0.0.1; nothing is sent to 169.254.169.254.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from localcloud import imds


@pytest.fixture
def server(tmp_path):
    state = tmp_path / "imds.json"
    imds.write_state(state, instance_id="i-0abc", life_cycle="spot")
    srv = imds.serve_in_thread(state)
    yield srv
    srv.shutdown()
    srv.server_close()


def call(srv, method, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp
    finally:
        conn.close()


def token(srv, ttl="60"):
    status, body, _ = call(srv, "PUT", "/latest/api/token",
                           {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200
    return body


def get(srv, path, tok):
    status, body, _ = call(srv, "GET", path, {"X-aws-ec2-metadata-token": tok})
    return status, body


def test_it_listens_on_loopback_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        imds.IMDSServer(tmp_path / "s.json", host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback only"):
        imds.IMDSServer(tmp_path / "s.json", host="169.254.169.254")


def test_a_token_needs_a_ttl_between_1_and_21600(server) -> None:
    for headers in ({}, {"X-aws-ec2-metadata-token-ttl-seconds": "0"},
                    {"X-aws-ec2-metadata-token-ttl-seconds": "21601"},
                    {"X-aws-ec2-metadata-token-ttl-seconds": "six hours"}):
        status, body, _ = call(server, "PUT", "/latest/api/token", headers)
        assert (status, body) == (400, "Missing or Invalid Parameters"), headers
    status, body, resp = call(server, "PUT", "/latest/api/token",
                              {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert status == 200 and len(body) > 20
    assert resp.getheader("X-aws-ec2-metadata-token-ttl-seconds") == "21600"
    assert resp.getheader("Content-Type") == "text/plain"


def test_a_put_with_x_forwarded_for_is_refused(server) -> None:
    status, _, _ = call(server, "PUT", "/latest/api/token",
                        {"X-aws-ec2-metadata-token-ttl-seconds": "60",
                         "X-Forwarded-For": "203.0.113.7"})
    assert status == 403


def test_a_get_without_a_valid_token_is_401(server) -> None:
    assert call(server, "GET", "/latest/meta-data/instance-id")[:2] == (401, "Unauthorized")
    assert get(server, "/latest/meta-data/instance-id", "made-up")[0] == 401
    assert get(server, "/latest/meta-data/instance-id", token(server)) == (200, "i-0abc")


def test_a_token_expires_after_its_ttl(server) -> None:
    tok = token(server, "1")
    assert get(server, "/latest/meta-data/instance-life-cycle", tok) == (200, "spot")
    time.sleep(1.2)
    assert get(server, "/latest/meta-data/instance-life-cycle", tok)[0] == 401


def test_expire_tokens_invalidates_every_token_handed_out(server) -> None:
    old = token(server)
    imds.expire_tokens(server.state_path)
    assert get(server, "/latest/meta-data/instance-id", old)[0] == 401
    assert get(server, "/latest/meta-data/instance-id", token(server))[0] == 200


def test_notices_are_404_until_published_then_the_documented_json(server) -> None:
    tok = token(server)
    assert get(server, imds_path("spot/instance-action"), tok)[0] == 404
    assert get(server, imds_path("events/recommendations/rebalance"), tok)[0] == 404
    notice = imds.publish_notice(server.state_path, "terminate", 120)
    status, body = get(server, imds_path("spot/instance-action"), tok)
    assert status == 200
    assert body == f'{{"action": "terminate", "time": "{notice["time"]}"}}'
    assert json.loads(body) == notice
    left = time.mktime(time.strptime(notice["time"], imds.TIME_FORMAT)) - time.mktime(
        time.gmtime())
    assert 115 <= left <= 121
    rebalance = imds.publish_rebalance(server.state_path)
    status, body = get(server, imds_path("events/recommendations/rebalance"), tok)
    assert (status, json.loads(body)) == (200, rebalance)
    assert set(rebalance) == {"noticeTime"}
    imds.write_state(server.state_path, instance_action=None, rebalance=None)
    assert get(server, imds_path("spot/instance-action"), tok)[0] == 404


def test_listings_head_and_other_methods(server) -> None:
    tok = token(server)
    status, body = get(server, "/latest/meta-data/", tok)
    assert (status, body.splitlines()) == (200, ["instance-id", "instance-life-cycle"])
    imds.publish_notice(server.state_path, "stop", 60)
    assert get(server, "/latest/meta-data/", tok)[1].splitlines() == [
        "instance-id", "instance-life-cycle", "spot/"]
    assert get(server, "/latest/meta-data/spot/", tok) == (200, "instance-action")
    assert get(server, "/latest/meta-data/nothing-here", tok)[0] == 404
    status, body, _ = call(server, "HEAD", "/latest/meta-data/instance-id",
                           {"X-aws-ec2-metadata-token": tok})
    assert (status, body) == (200, "")
    assert call(server, "POST", "/latest/meta-data/instance-id")[0] == 405
    assert call(server, "GET", "/latest/api/token")[0] == 405


def test_a_malformed_notice_is_served_as_given(server) -> None:
    imds.write_state(server.state_path, instance_action="{not json")
    assert get(server, imds_path("spot/instance-action"), token(server)) == (200, "{not json")


def test_the_request_counts(server) -> None:
    call(server, "GET", "/latest/meta-data/instance-id")
    get(server, "/latest/meta-data/instance-id", token(server))
    assert server.stats == {"GET 401": 1, "PUT 200": 1, "GET 200": 1}


def test_the_cli_starts_publishes_and_stops_a_stand_in(tmp_path, capsys) -> None:
    from localcloud.registry import Registry

    registry = Registry(tmp_path)
    imds.main(["start", "box1", "--life-cycle", "on-demand", "--instance-id", "i-0cli"],
              registry)
    record = json.loads(capsys.readouterr().out)
    try:
        assert record["endpoint"] == f"http://127.0.0.1:{record['port']}"
        srv = type("S", (), {"port": record["port"]})
        tok = token(srv)
        assert get(srv, "/latest/meta-data/instance-life-cycle", tok) == (200, "on-demand")
        imds.main(["notice", "box1", "--action", "stop", "--in", "30"], registry)
        assert json.loads(capsys.readouterr().out)["action"] == "stop"
        deadline = time.monotonic() + 5
        while get(srv, imds_path("spot/instance-action"), tok)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        imds.main(["clear", "box1"], registry)
        assert get(srv, imds_path("spot/instance-action"), tok)[0] == 404
    finally:
        imds.main(["stop", "box1"], registry)
    assert registry.get("imds", "box1") is None
    with pytest.raises(OSError):
        token(srv)


def imds_path(item: str) -> str:
    return f"/latest/meta-data/{item}"
