"""Who calls, and may they: access keys and the IAM policies of moto's users.

The admin key ``localcloud`` (what ``localcloud.moto.aws_env`` exports) is
the account root: always allowed. Any other key must belong to an IAM user
made in moto; that user's inline, attached and group policies are evaluated
as IAM does for identity-based policies: an explicit Deny wins, else an
Allow is needed, else the request is implicitly denied.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from . import core

# "No permissions are required to perform this operation. If an administrator
# attaches a policy to your identity that explicitly denies access to the
# sts:GetCallerIdentity action, you can still perform this operation."
# (STS API reference, GetCallerIdentity; botocore sts service-2.json)
ALWAYS_ALLOWED = {"sts:GetCallerIdentity"}

# Services whose calls the layer authorises; others (REST protocols such as
# S3) pass to moto unchecked.
CHECKED_SERVICES = {"ec2", "servicequotas", "iam", "sts"}


@dataclass
class Caller:
    arn: str
    account: str
    user: str | None = None  # None: the account root
    policies: list[dict[str, Any]] = field(default_factory=list)


def account_id(layer: core.Layer) -> str:
    with layer.lock:
        if "account" not in layer.memory:
            sts = layer.moto.client("sts", "us-east-1")
            layer.memory["account"] = sts.get_caller_identity()["Account"]
        return layer.memory["account"]


def iam_action(call: core.Call) -> str:
    """The IAM action name of a call: ec2:RunInstances, servicequotas:GetServiceQuota, ..."""
    return f"{call.service}:{call.action}"


def unknown_key_error(call: core.Call) -> core.AwsError:
    # EC2: "AuthFailure: AWS was not able to validate the provided access
    # credentials" (quoted in diodonfrost/terraform-aws-lambda-scheduler-stop-start#8).
    # STS/IAM: the raw answer body <Code>InvalidClientTokenId</Code><Message>The
    # security token included in the request is invalid</Message>, HTTP 403
    # (aws-azure-login/aws-azure-login#251). JSON 1.1 services answer, HTTP 400,
    # {"__type":"UnrecognizedClientException","message":"The security token
    # included in the request is invalid."} (cognito-idp's raw body in
    # ArranJacques/laravel-aws-cognito-auth#25; not seen for servicequotas itself).
    if call.service == "ec2":
        return core.AwsError("AuthFailure",
                             "AWS was not able to validate the provided access credentials", 401)
    if call.protocol == "json":
        return core.AwsError("UnrecognizedClientException",
                             "The security token included in the request is invalid.", 400)
    return core.AwsError("InvalidClientTokenId",
                         "The security token included in the request is invalid", 403)


def caller_of(layer: core.Layer, call: core.Call) -> Caller:
    account = account_id(layer)
    if call.is_root:
        return Caller(arn=f"arn:aws:iam::{account}:root", account=account)
    # Looking a user's policies up costs about six moto calls; a launch makes dozens of
    # calls. The answer is kept until IAM changes (see forget_callers) or moto is reset.
    with layer.lock:
        known = layer.memory.setdefault("callers", {}).get(call.access_key)
    if known is not None:
        return known
    iam = layer.moto.client("iam", "us-east-1")
    try:
        user = iam.get_access_key_last_used(AccessKeyId=call.access_key)["UserName"]
    except Exception:
        raise unknown_key_error(call) from None
    caller = Caller(arn=f"arn:aws:iam::{account}:user/{user}", account=account, user=user,
                    policies=user_policies(iam, user))
    with layer.lock:
        layer.memory.setdefault("callers", {})[call.access_key] = caller
    return caller


def forget_callers(layer: core.Layer, call: core.Call, reply: core.Reply) -> None:
    """Any IAM change (a policy, a key, a group) may change what a caller may do."""
    if call.service == "iam" and not call.action.startswith(("Get", "List")):
        with layer.lock:
            layer.memory.pop("callers", None)


core.AFTER_ANY.append(forget_callers)


def user_policies(iam, user: str) -> list[dict[str, Any]]:
    """Every policy document that applies to the user: inline, attached, through groups."""
    documents = []
    for name in iam.list_user_policies(UserName=user)["PolicyNames"]:
        documents.append(iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"])
    attached = iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    for group in iam.list_groups_for_user(UserName=user)["Groups"]:
        name = group["GroupName"]
        for policy in iam.list_group_policies(GroupName=name)["PolicyNames"]:
            documents.append(iam.get_group_policy(GroupName=name, PolicyName=policy)
                             ["PolicyDocument"])
        attached += iam.list_attached_group_policies(GroupName=name)["AttachedPolicies"]
    for policy in attached:
        version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
        documents.append(iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)
                         ["PolicyVersion"]["Document"])
    return [_as_dict(doc) for doc in documents]


def _as_dict(document: Any) -> dict[str, Any]:
    if isinstance(document, str):
        return json.loads(urllib.parse.unquote(document))
    return document


# ------------------------------------------------------------- evaluation

def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str) -> bool:
    # IAM wildcards: * any run of characters, ? one character; case-insensitive
    # for actions, as IAM compares action names.
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _statement_applies(statement: dict[str, Any], action: str,
                       context: dict[str, list[str]]) -> bool:
    if "Action" in statement:
        if not any(_matches(p, action) for p in _listed(statement["Action"])):
            return False
    elif "NotAction" in statement and any(
            _matches(p, action) for p in _listed(statement["NotAction"])):
        return False
    # Resources: "*" and ARNs are taken as matching (the layer does not model
    # resource-level permissions).
    return conditions_hold(statement.get("Condition") or {}, context)


def conditions_hold(conditions: dict[str, Any], context: dict[str, list[str]]) -> bool:
    """IAM's condition block: every operator, every key, any of the values."""
    for operator, keys in conditions.items():
        for key, wanted in keys.items():
            if not _condition(operator, context.get(key.lower()), _listed(wanted)):
                return False
    return True


def _condition(operator: str, present: list[str] | None, wanted: list[Any]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    quantifier, _, base = base.rpartition(":")
    if base == "Null":
        is_null = present is None
        return any(str(w).lower() == ("true" if is_null else "false") for w in wanted)
    if present is None:
        # A key missing from the request: IfExists and the negated operators hold.
        return if_exists or base.startswith(("StringNot", "ArnNot"))
    wanted = [str(w) for w in wanted]
    compare = {
        "StringEquals": lambda v, w: v == w,
        "StringNotEquals": lambda v, w: v != w,
        "StringEqualsIgnoreCase": lambda v, w: v.lower() == w.lower(),
        "StringNotEqualsIgnoreCase": lambda v, w: v.lower() != w.lower(),
        "StringLike": lambda v, w: fnmatch.fnmatchcase(v, w),
        "StringNotLike": lambda v, w: not fnmatch.fnmatchcase(v, w),
        "ArnEquals": lambda v, w: v == w,
        "ArnLike": lambda v, w: fnmatch.fnmatchcase(v, w),
        "ArnNotEquals": lambda v, w: v != w,
        "ArnNotLike": lambda v, w: not fnmatch.fnmatchcase(v, w),
        "Bool": lambda v, w: v.lower() == w.lower(),
    }.get(base)
    if compare is None:
        return False  # an operator the layer does not know never grants
    negated = "Not" in base
    if quantifier == "ForAllValues":
        return all(any(compare(v, w) for w in wanted) for v in present)
    if negated:
        return all(all(compare(v, w) for w in wanted) for v in present)
    return any(compare(v, w) for v in present for w in wanted)


def evaluate(policies: list[dict[str, Any]], action: str,
             context: dict[str, list[str]]) -> str:
    """'allow', 'explicit-deny' or 'implicit-deny' for an identity's policies."""
    allowed = False
    for policy in policies:
        for statement in _listed(policy.get("Statement", [])):
            if not _statement_applies(statement, action, context):
                continue
            if statement.get("Effect") == "Deny":
                return "explicit-deny"
            if statement.get("Effect") == "Allow":
                allowed = True
    return "allow" if allowed else "implicit-deny"


def request_context(call: core.Call) -> dict[str, list[str]]:
    """The condition keys a call carries (lower-case names, as IAM compares them)."""
    context: dict[str, list[str]] = {"aws:requestedregion": [call.region]}
    form = call.form
    if call.service == "iam" and form.get("AWSServiceName"):
        context["iam:awsservicename"] = [form["AWSServiceName"]]
    tags: dict[str, str] = {}
    if call.service == "ec2":
        for spec in call.params().get("TagSpecifications") or []:
            tags.update({t["Key"]: t.get("Value", "") for t in spec.get("Tags") or []})
        if call.params().get("InstanceType"):
            context["ec2:instancetype"] = [call.params()["InstanceType"]]
    elif call.service == "iam":
        index = 1
        while f"Tags.member.{index}.Key" in form:
            tags[form[f"Tags.member.{index}.Key"]] = form.get(f"Tags.member.{index}.Value", "")
            index += 1
    for key, value in tags.items():
        context[f"aws:requesttag/{key}".lower()] = [value]
    if tags:
        context["aws:tagkeys"] = list(tags)
    return context


def allowed(caller: Caller, action: str, context: dict[str, list[str]]) -> bool:
    return caller.user is None or evaluate(caller.policies, action, context) == "allow"


def denied_message(caller: Caller, action: str, decision: str, resource: str | None) -> str:
    """IAM's words for a denial, as the services include them in their errors.

    "Most access denied error messages appear in the format User user is not
    authorized to perform action on resource because context"; "with an
    explicit deny in a type policy" / "because no type policy allows the
    action action" (IAM User Guide, troubleshoot_access-denied.html).
    """
    on = f" on resource: {resource}" if resource else ""
    why = ("with an explicit deny in an identity-based policy" if decision == "explicit-deny"
           else f"because no identity-based policy allows the {action} action")
    return f"User: {caller.arn} is not authorized to perform: {action}{on} {why}"


def resource_of(call: core.Call, account: str) -> str | None:
    if call.service == "ec2" and call.action == "RunInstances":
        return f"arn:aws:ec2:{call.region}:{account}:instance/*"
    if call.service == "iam" and call.action == "CreateServiceLinkedRole":
        service = call.form.get("AWSServiceName", "")
        return f"arn:aws:iam::{account}:role/aws-service-role/{service}/*"
    return None


def encoded_failure(caller: Caller, action: str) -> str:
    # EC2 appends an opaque token that sts:DecodeAuthorizationMessage decodes;
    # the layer's token is base64 JSON of the same facts, not AWS's format.
    facts = {"allowed": False, "principal": caller.arn, "action": action,
             "nonce": secrets.token_hex(4)}
    return base64.urlsafe_b64encode(json.dumps(facts).encode()).decode()


# EC2 prefixes IAM's words and appends the encoded message, HTTP 403:
# "UnauthorizedOperation: You are not authorized to perform this operation.
# User: arn:… is not authorized to perform: ec2:RunInstances on resource:
# arn:aws:ec2:us-east-2:…:instance/* with an explicit deny in a service
# control policy. Encoded authorization failure message: …"
# (aws/karpenter-provider-aws#7370; 403 in hashicorp/terraform-provider-aws#8720).
def deny(call: core.Call, caller: Caller, action: str, decision: str) -> core.AwsError:
    message = denied_message(caller, action, decision, resource_of(call, caller.account))
    if call.service == "ec2":
        return core.AwsError(
            "UnauthorizedOperation",
            f"You are not authorized to perform this operation. {message}. "
            f"Encoded authorization failure message: {encoded_failure(caller, action)}", 403)
    if call.protocol == "json":
        return core.AwsError("AccessDeniedException", message, 400)
    return core.AwsError("AccessDenied", message, 403)


def authorize(layer: core.Layer, call: core.Call) -> None:
    """The guard every call passes: find the caller, apply its policies."""
    if call.service not in CHECKED_SERVICES:
        return
    call.caller = caller_of(layer, call)
    action = iam_action(call)
    if call.caller.user is None or action in ALWAYS_ALLOWED:
        return
    decision = evaluate(call.caller.policies, action, request_context(call))
    if decision != "allow":
        raise deny(call, call.caller, action, decision)


core.GUARDS.append(authorize)


# The admin key is the account root: GetCallerIdentity says so as AWS says it
# for root credentials ("arn:aws:iam::ACCOUNT:root", the account as UserId);
# moto would name a user "moto".
@core.before("sts", "GetCallerIdentity")
def root_identity(layer: core.Layer, call: core.Call) -> core.Reply | None:
    if not call.is_root:
        return None
    account = account_id(layer)
    return core.query_answer("sts", "GetCallerIdentity", {
        "UserId": account, "Account": account, "Arn": f"arn:aws:iam::{account}:root"})
