"""AWS helpers shared by spotbox's modules: finding a box's resources by its
tags, exactly, and turning AWS errors into one line.

EC2 filter values are patterns: "*" and "?" are wildcards (EC2 API reference,
"Filter": "Filter values are case-sensitive ... You can use wildcards"), so a
name given as a filter value could match other boxes. Every lookup here filters
on the box's tags and then keeps only resources whose tags equal the name and
owner exactly.
"""

from __future__ import annotations

import random
import time

BOX_TAG = "spotbox:box"
OWNER_TAG = "spotbox:owner"
ROLE_TAG = "spotbox:role"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def box_filters(name: str, owner: str, **extra: str | list[str]) -> list[dict]:
    """EC2 filters for the resources of one box of one owner (plus extra filters)."""
    filters = {f"tag:{BOX_TAG}": [name], f"tag:{OWNER_TAG}": [owner], **extra}
    return [{"Name": key, "Values": value if isinstance(value, list) else [value]}
            for key, value in filters.items()]


def exactly_ours(resources: list[dict], name: str, owner: str) -> list[dict]:
    """The resources whose box and owner tags equal name and owner, not just match them."""
    return [r for r in resources
            if tags_of(r).get(BOX_TAG) == name and tags_of(r).get(OWNER_TAG) == owner]


def box_instances(client, name: str, owner: str, states: list[str] | None = None) -> list[dict]:
    """The box's instances in the given states (default: every state but terminated)."""
    paginator = client.get_paginator("describe_instances")
    found = []
    filters = box_filters(name, owner, **{"instance-state-name": states or LIVE_STATES})
    for page in paginator.paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found += reservation["Instances"]
    return sorted(exactly_ours(found, name, owner), key=lambda i: i["LaunchTime"])


def box_volumes(client, name: str, owner: str, role: str = "data") -> list[dict]:
    """The box's volumes of a role ("data"), in any state but deleting or deleted."""
    paginator = client.get_paginator("describe_volumes")
    found = []
    for page in paginator.paginate(Filters=box_filters(name, owner, **{f"tag:{ROLE_TAG}": role})):
        found += page["Volumes"]
    found = [v for v in exactly_ours(found, name, owner)
             if tags_of(v).get(ROLE_TAG) == role and v["State"] not in ("deleting", "deleted")]
    return sorted(found, key=lambda v: v["CreateTime"])


def owner_of(identity: dict) -> str:
    """The owner tag value for a caller (STS GetCallerIdentity's answer).

    An IAM user's or role's ARN; for an assumed role the session name is kept
    (SSO users' sessions are named after the person), so two people sharing a
    role still see only their own boxes.
    """
    return identity["Arn"]


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)


def error_message(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Message", str(exc))


# EC2 throttles each API per account and region (RunInstances: a bucket of 5
# requests refilled at 2 per second) and answers RequestLimitExceeded; its guide
# says to retry with exponential backoff ("Request throttling for the Amazon EC2
# API", Retries and exponential backoff).
THROTTLED = "RequestLimitExceeded"


def retry_throttled(call, tries: int = 6, first_wait: float = 1.0, sleep=time.sleep):
    """call(), again after a growing, jittered wait while EC2 answers RequestLimitExceeded
    (botocore's ClientError); any other error, or the last try's, is raised."""
    for attempt in range(tries - 1):
        try:
            return call()
        except Exception as exc:  # botocore's ClientError: no botocore import here
            if error_code(exc) != THROTTLED:
                raise
            sleep(first_wait * 2 ** attempt * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
    return call()  # the last try: its error, whatever it is, is the caller's


def denied_line(exc: Exception, doing: str) -> str | None:
    """One line for an authorization error (any AWS service's code), else None."""
    code = error_code(exc)
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
                "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException"):
        return (f"the AWS identity may not {doing} ({code}: {error_message(exc)}). "
                "Give it the policy in docs/iam-policy.json, or use other credentials")
    return None
